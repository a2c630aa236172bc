package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/registry/auth"
)

// EventsPath is where the admin API shows and replays webhook deliveries:
//
//	GET    /_berth/admin/events?state=&endpoint=&after=&n=  list (a notify.Listing)
//	POST   /_berth/admin/events/{seq}/retry               retry one (a notify.Record)
//	DELETE /_berth/admin/events/{seq}                     drop one (204)
//	POST   /_berth/admin/events/retry?endpoint=           retry every dead letter (a Count)
//	DELETE /_berth/admin/events?state=dead&endpoint=      drop every dead letter (a Count)
//
// state is "pending", "dead" or empty for both; n bounds the page (default
// 100, at most notify.MaxListLimit) and the answer's next, if any, is the
// after of the next page. Dropping all requires state=dead, so that no
// request drops pending deliveries by omission.
const EventsPath = auth.AdminPrefix + "events"

// Events is what the API needs of webhook deliveries; *notify.Notifier is
// one.
type Events interface {
	List(ctx context.Context, q notify.Query) (notify.Listing, error)
	Retry(ctx context.Context, seq uint64) (notify.Record, error)
	Drop(ctx context.Context, seq uint64) error
	RetryAll(ctx context.Context, endpoint string) (int, error)
	DropAll(ctx context.Context, endpoint string) (int, error)
}

// Count answers the requests that retry or drop every dead letter.
type Count struct {
	Count int `json:"count"`
}

// Error codes of the events endpoints.
const (
	codeEventUnknown    = "EVENT_UNKNOWN"
	codeEndpointUnknown = "ENDPOINT_UNKNOWN"
	codeQueryInvalid    = "QUERY_INVALID"
)

// eventsRoutes adds the events endpoints to r.
func (a *api) eventsRoutes(r *mux.Router) {
	r.HandleFunc(EventsPath, a.listEvents).Methods(http.MethodGet)
	r.HandleFunc(EventsPath, a.dropAllEvents).Methods(http.MethodDelete)
	r.HandleFunc(EventsPath+"/retry", a.retryAllEvents).Methods(http.MethodPost)
	r.HandleFunc(EventsPath+"/{seq:[0-9]+}/retry", a.retryEvent).Methods(http.MethodPost)
	r.HandleFunc(EventsPath+"/{seq:[0-9]+}", a.dropEvent).Methods(http.MethodDelete)
}

func (a *api) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := notify.Query{State: q.Get("state"), Endpoint: q.Get("endpoint")}
	var err error
	if v := q.Get("after"); v != "" {
		if query.After, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, r, http.StatusBadRequest, codeQueryInvalid, "after "+strconv.Quote(v)+": want a delivery number")
			return
		}
	}
	if v := q.Get("n"); v != "" {
		if query.Limit, err = strconv.Atoi(v); err != nil || query.Limit < 1 {
			writeError(w, r, http.StatusBadRequest, codeQueryInvalid, "n "+strconv.Quote(v)+": want a positive number")
			return
		}
	}
	l, err := a.Events.List(r.Context(), query)
	if err != nil {
		a.eventsFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// seqVar reads the delivery number of the path.
func seqVar(r *http.Request) (uint64, error) {
	v := mux.Vars(r)["seq"]
	seq, err := strconv.ParseUint(v, 10, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("%q is not a delivery number", v)
	}
	return seq, nil
}

func (a *api) retryEvent(w http.ResponseWriter, r *http.Request) {
	seq, err := seqVar(r)
	if err != nil {
		writeError(w, r, http.StatusNotFound, codeEventUnknown, err.Error())
		return
	}
	rec, err := a.Events.Retry(r.Context(), seq)
	if err != nil {
		a.eventsFailed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "webhook delivery retried", "delivery", seq, "as", rec.Seq,
		"endpoint", rec.Endpoint, "by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, rec)
}

func (a *api) dropEvent(w http.ResponseWriter, r *http.Request) {
	seq, err := seqVar(r)
	if err != nil {
		writeError(w, r, http.StatusNotFound, codeEventUnknown, err.Error())
		return
	}
	if err := a.Events.Drop(r.Context(), seq); err != nil {
		a.eventsFailed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "webhook delivery dropped", "delivery", seq, "by", auth.IdentityFrom(r.Context()).String())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) retryAllEvents(w http.ResponseWriter, r *http.Request) {
	endpoint := r.URL.Query().Get("endpoint")
	n, err := a.Events.RetryAll(r.Context(), endpoint)
	if err != nil {
		a.eventsFailed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "webhook dead letters retried", "count", n, "endpoint", endpoint,
		"by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, Count{Count: n})
}

func (a *api) dropAllEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("state") != notify.StateDead {
		writeError(w, r, http.StatusBadRequest, codeQueryInvalid, "state=dead is required: only dead letters are dropped all at once")
		return
	}
	n, err := a.Events.DropAll(r.Context(), q.Get("endpoint"))
	if err != nil {
		a.eventsFailed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "webhook dead letters dropped", "count", n, "endpoint", q.Get("endpoint"),
		"by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, Count{Count: n})
}

// eventsFailed answers a failure of the events endpoints.
func (a *api) eventsFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, notify.ErrNotFound):
		writeError(w, r, http.StatusNotFound, codeEventUnknown, err.Error())
	case errors.Is(err, notify.ErrUnknownEndpoint):
		writeError(w, r, http.StatusConflict, codeEndpointUnknown, err.Error())
	case errors.Is(err, notify.ErrInvalidQuery):
		writeError(w, r, http.StatusBadRequest, codeQueryInvalid, err.Error())
	default:
		a.failed(w, r, err)
	}
}
