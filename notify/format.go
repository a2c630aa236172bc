package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/berth-registry/berth/storage"
)

// The headers of a delivery request, besides Content-Type and those the
// endpoint's configuration adds.
const (
	// SignatureHeader carries "sha256=" and the lower-case hex HMAC-SHA256
	// of the request body under the endpoint's secret, when it has one.
	SignatureHeader = "Berth-Signature"
	// EventIDHeader carries the event's identifier, the same for every
	// attempt and every endpoint: a receiver drops an event it has seen.
	EventIDHeader = "Berth-Event-Id"
	// DeliveryHeader carries the delivery's number in the outbox, the
	// number `berth events` shows.
	DeliveryHeader = "Berth-Delivery"
	// AttemptHeader carries the attempt's number, from 1.
	AttemptHeader = "Berth-Attempt"
)

// The content types of the formats.
const (
	CloudEventsContentType  = "application/cloudevents+json; charset=utf-8"
	DistributionContentType = "application/vnd.docker.distribution.events.v2+json"
)

// CloudEventTypePrefix starts the type attribute of Berth's CloudEvents,
// followed by the event's action: "io.github.berth-registry.push".
const CloudEventTypePrefix = "io.github.berth-registry."

// CloudEvent is an event in the CloudEvents 1.0 structured JSON format.
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject,omitempty"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	// Data is the event as the store published it: action, repository,
	// tag, digest, previous, mediaType, size, actor, time.
	Data storage.Event `json:"data"`
}

// Sign returns the value of SignatureHeader for body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether header, a SignatureHeader value, signs body
// under secret, comparing in constant time.
func Verify(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sum, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sum, mac.Sum(nil))
}

// subject is the CloudEvents subject of e: repository:tag for a tag's
// event, repository@digest otherwise.
func subject(e storage.Event) string {
	switch {
	case e.Tag != "":
		return e.Repo + ":" + e.Tag
	case e.Repo != "" && e.Digest != "":
		return e.Repo + "@" + string(e.Digest)
	case e.Repo != "":
		return e.Repo
	}
	return string(e.Digest)
}

// cloudEvent encodes e, of identifier id, as a CloudEvent from source.
func cloudEvent(id, source string, e storage.Event) ([]byte, error) {
	ce := CloudEvent{SpecVersion: "1.0", ID: id, Source: source, Type: CloudEventTypePrefix + e.Action,
		Subject: subject(e), Time: e.Time.UTC().Format(time.RFC3339Nano), DataContentType: "application/json", Data: e}
	return json.Marshal(ce)
}

// Envelope is the body of a request in the distribution format.
type Envelope struct {
	Events []DistributionEvent `json:"events"`
}

// DistributionEvent is one event of an Envelope, with the fields the
// consumers of that format read.
type DistributionEvent struct {
	ID        string             `json:"id"`
	Timestamp string             `json:"timestamp"`
	Action    string             `json:"action"`
	Target    DistributionTarget `json:"target"`
	Request   DistributionReq    `json:"request"`
	Actor     DistributionActor  `json:"actor"`
	Source    DistributionSource `json:"source"`
}

// DistributionTarget is what an event of the distribution format is about.
type DistributionTarget struct {
	MediaType  string `json:"mediaType,omitempty"`
	Size       int64  `json:"size,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Length     int64  `json:"length,omitempty"`
	Repository string `json:"repository,omitempty"`
	Tag        string `json:"tag,omitempty"`
}

// DistributionReq is the request of an event of the distribution format:
// Berth gives the client's address.
type DistributionReq struct {
	Addr string `json:"addr,omitempty"`
}

// DistributionActor is who made the change.
type DistributionActor struct {
	Name string `json:"name,omitempty"`
}

// DistributionSource is the registry the event comes from.
type DistributionSource struct {
	Addr string `json:"addr,omitempty"`
}

// distributionAction maps Berth's actions to the format's push and delete:
// a tag set or moved (by a push, a promotion or a rollback) is a push of
// its manifest under the tag; a tag or manifest removed is a delete.
func distributionAction(action string) string {
	switch action {
	case storage.EventPush, storage.EventBlobPush, storage.EventTag, storage.EventPromote, storage.EventRollback:
		return "push"
	}
	return "delete"
}

// distributionEvent encodes e, of identifier id, in the distribution
// envelope, from source.
func distributionEvent(id, source string, e storage.Event) ([]byte, error) {
	de := DistributionEvent{ID: id, Timestamp: e.Time.UTC().Format(time.RFC3339Nano), Action: distributionAction(e.Action),
		Target: DistributionTarget{MediaType: e.MediaType, Size: e.Size, Length: e.Size, Digest: string(e.Digest),
			Repository: e.Repo, Tag: e.Tag},
		Request: DistributionReq{Addr: e.Actor.Address},
		Actor:   DistributionActor{Name: e.Actor.Name},
		Source:  DistributionSource{Addr: source},
	}
	if e.Action == storage.EventBlobPush {
		de.Target.MediaType = "application/octet-stream"
	}
	if de.Action == "delete" && e.Digest == "" {
		// A tag removed: the manifest it named.
		de.Target.Digest = string(e.Previous)
	}
	return json.Marshal(Envelope{Events: []DistributionEvent{de}})
}

// body encodes e in the endpoint's format and returns it with its content
// type.
func (ep *endpoint) body(id, source string, e storage.Event) ([]byte, string, error) {
	var b []byte
	var err error
	ctype := CloudEventsContentType
	if ep.format == FormatDistribution {
		b, err = distributionEvent(id, source, e)
		ctype = DistributionContentType
	} else {
		b, err = cloudEvent(id, source, e)
	}
	if err != nil {
		return nil, "", fmt.Errorf("encode event %s: %w", id, err)
	}
	return b, ctype, nil
}
