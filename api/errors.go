package api

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
)

// Errors a Reserver or Sessions returns, wrapped with %w, which the API maps
// to HTTP statuses. Any other error is a 500 with a generic message; its text
// goes to the server's log, never to the client.
var (
	ErrBadRequest = errors.New("bad request") // 400
	ErrNotFound   = errors.New("not found")   // 404
	// ErrModelNotFound is a model no miner serves: a 404 in OpenAI's
	// shape, naming the model parameter.
	ErrModelNotFound = errors.New("model not found")    // 404
	ErrConflict      = errors.New("conflict")           // 409
	ErrTooMany       = errors.New("too many requests")  // 429
	ErrBadGateway    = errors.New("the miners failed")  // 502
	ErrUnavailable   = errors.New("no miner available") // 503
	ErrTimeout       = errors.New("timed out")          // 504
)

// errTooLarge is a request body over MaxBody: 413.
var errTooLarge = errors.New("request body too large")

// ErrorBody is the shape of every error the API returns, as OpenAI's API does.
type ErrorBody struct {
	Error struct {
		Message string `json:"message"`
		// Type is OpenAI's error type: invalid_request_error,
		// authentication_error, rate_limit_error or server_error.
		Type string `json:"type"`
		// Param names the request's field at fault, or is null.
		Param *string `json:"param"`
		// Code is the HTTP status as a number, or OpenAI's string code
		// where one exists ("invalid_api_key", "model_not_found").
		Code any `json:"code"`
	} `json:"error"`
}

// requestError is an error the API itself finds in a request: its message is
// shown as it is, and kind decides the status.
type requestError struct {
	msg  string
	kind error
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.kind }

// badRequest is a 400 whose message says what is wrong.
func badRequest(format string, args ...any) error {
	return &requestError{msg: fmt.Sprintf(format, args...), kind: ErrBadRequest}
}

func errorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

func errorBody(status int, msg string) ErrorBody {
	var body ErrorBody
	body.Error.Message = msg
	body.Error.Type = errorType(status)
	body.Error.Code = status
	return body
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody(status, msg))
}

// errorStatus maps err to its status and the message the client sees. It is
// the one place the sentinel errors become statuses.
func errorStatus(err error) (status int, msg string) {
	switch {
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrModelNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, err.Error()
	case errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests, err.Error()
	case errors.Is(err, ErrBadGateway):
		return http.StatusBadGateway, err.Error()
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, err.Error()
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "request canceled"
	}
	return http.StatusInternalServerError, "internal error; the node's log has the details"
}

// retryAfter is the Retry-After of a 429: the queue moves in well under a
// second on an idle pool, and OpenAI's clients back off from there.
const retryAfter = "1"

// writeErr answers err with its status (errorStatus); an unknown error is
// logged and answered with a generic 500. A model no miner serves names
// the parameter, and a 429 says when to retry.
func writeErr(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := errorStatus(err)
	body := errorBody(status, msg)
	switch {
	case status == http.StatusInternalServerError:
		logf(r, "api: %s %s: %v", r.Method, r.URL.Path, err)
	case errors.Is(err, ErrModelNotFound):
		param := "model"
		body.Error.Param, body.Error.Code = &param, "model_not_found"
	case status == http.StatusTooManyRequests:
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, status, body)
}

// logf logs to the serving http.Server's ErrorLog, as net/http does with
// its own troubles, or to the standard logger.
func logf(r *http.Request, format string, args ...any) {
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.ErrorLog != nil {
		srv.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}
