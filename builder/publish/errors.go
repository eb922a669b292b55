package publish

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
)

// ServiceError is a failed call to an OpenStack service (or the strata
// controller): which service, at which URL, doing what, and what it said.
type ServiceError struct {
	Service string // keystone, glance, trove, strata controller
	URL     string
	Action  string
	// Status is the HTTP status (0 when the service was not reached).
	Status int
	// Message is what the service said, or why it could not be reached.
	Message string
	Err     error
}

func (e *ServiceError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%s at %s: %s: %s", e.Service, e.URL, e.Action, e.Message)
	}
	return fmt.Sprintf("%s at %s: %s: HTTP %d: %s", e.Service, e.URL, e.Action, e.Status, e.Message)
}

func (e *ServiceError) Unwrap() error { return e.Err }

// serviceError describes err from a call to service at base.
func serviceError(service, base, action string, err error) error {
	if err == nil {
		return nil
	}
	se := &ServiceError{Service: service, URL: base, Action: action, Err: err}
	var code gophercloud.ErrUnexpectedResponseCode
	var uerr *url.Error
	var nerr net.Error
	switch {
	case errors.As(err, &code):
		se.Status = code.Actual
		se.Message = bodyMessage(code.Body)
		if se.Message == "" {
			se.Message = "(no message)"
		}
		if code.Actual == 401 && service == "keystone" {
			se.Message = "wrong credentials: " + se.Message
		}
	case errors.As(err, &uerr), errors.As(err, &nerr):
		se.Message = "unreachable: " + err.Error()
	default:
		se.Message = err.Error()
	}
	return se
}

var htmlTag = regexp.MustCompile(`<[^>]*>`)

// bodyMessage pulls the human part out of an error body: Trove's
// {"badRequest": {"message": ...}}, Keystone's {"error": {"message": ...}},
// Glance's plain or HTML text.
func bodyMessage(body []byte) string {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) == nil {
		for _, v := range doc {
			var inner struct {
				Message     string `json:"message"`
				Title       string `json:"title"`
				Explanation string `json:"explanation"`
			}
			if json.Unmarshal(v, &inner) == nil && inner.Message != "" {
				return trunc(inner.Message)
			}
		}
		var flat struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &flat) == nil && flat.Message != "" {
			return trunc(flat.Message)
		}
	}
	text := htmlTag.ReplaceAllString(string(body), " ")
	return trunc(strings.Join(strings.Fields(text), " "))
}

func trunc(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}
