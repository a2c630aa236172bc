package registry

import (
	"strconv"
	"strings"
)

// ListeningAddr reports whether line is the record Server.Run logs once it
// listens ("msg=listening addr=HOST:PORT ..." in log/slog's text format),
// and returns the address. Scripts and tests that start berth on port 0
// read the chosen port from it.
func ListeningAddr(line string) (addr string, ok bool) {
	attrs := parseLogfmt(strings.TrimRight(line, "\r"))
	if attrs["msg"] != "listening" || attrs["addr"] == "" {
		return "", false
	}
	return attrs["addr"], true
}

// parseLogfmt parses key=value pairs as written by slog.TextHandler. Values
// may be Go-quoted strings. Malformed input yields whatever was parsed
// before the error.
func parseLogfmt(line string) map[string]string {
	attrs := make(map[string]string)
	s := line
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return attrs
		}
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			// A bare word without a value; skip it.
			if sp < 0 {
				return attrs
			}
			s = s[sp:]
			continue
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			quoted, err := strconv.QuotedPrefix(s)
			if err != nil {
				return attrs
			}
			val, err = strconv.Unquote(quoted)
			if err != nil {
				return attrs
			}
			s = s[len(quoted):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val = s[:end]
			s = s[end:]
		}
		if _, dup := attrs[key]; !dup {
			attrs[key] = val
		}
	}
}
