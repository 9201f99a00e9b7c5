package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// MaxBody bounds a request body, chat completions' included.
// A task's messages must fit in one signed message of the session protocol.
const MaxBody = 512 << 10

func handleReservations(mux *http.ServeMux, res Reserver) {
	mux.HandleFunc("POST /v1/reservations", func(w http.ResponseWriter, r *http.Request) {
		var req ReserveRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, r, err)
			return
		}
		var lease time.Duration
		if req.Lease != "" {
			d, err := time.ParseDuration(req.Lease)
			if err != nil || d <= 0 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("lease %q is not a positive duration such as 30s", req.Lease))
				return
			}
			lease = d
		}
		out, err := res.Reserve(r.Context(), req.Model, lease)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, out)
	})
	mux.HandleFunc("GET /v1/reservations", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, res.Reservations())
	})
	mux.HandleFunc("DELETE /v1/reservations/{id}", func(w http.ResponseWriter, r *http.Request) {
		out, err := res.Release(r.Context(), r.PathValue("id"))
		if err != nil {
			writeErr(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// readBody reads a request's body, up to MaxBody bytes: more is errTooLarge.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, badRequest("reading body: %v", err)
	}
	if len(body) > MaxBody {
		return nil, &requestError{msg: fmt.Sprintf("body over %d bytes", MaxBody), kind: errTooLarge}
	}
	return body, nil
}

// decodeBody reads a JSON object strictly: an unknown field, trailing data
// or a wrong type is a 400 that says what is wrong, never a guess; an
// oversized body is a 413. An empty body leaves v as it is. Its Content-Type
// was checked before (contentTypeRefusal).
func decodeBody(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil // every field is optional
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("invalid JSON body: data after the object")
	}
	return nil
}
