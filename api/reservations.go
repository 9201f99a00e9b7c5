package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxBody bounds a request body; reservation requests are tiny.
const maxBody = 64 << 10

func handleReservations(mux *http.ServeMux, res Reserver) {
	mux.HandleFunc("POST /v1/reservations", func(w http.ResponseWriter, r *http.Request) {
		var req ReserveRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
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
			writeReserverError(w, err)
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
			writeReserverError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func writeReserverError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeError(w, http.StatusBadGateway, err.Error())
	}
}

// decodeBody reads a JSON object strictly: an unknown field, trailing data,
// a wrong type or an oversized body is a clear 400, never a guess.
func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("content type %q, want application/json", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("reading body: %v", err)
	}
	if len(body) > maxBody {
		return fmt.Errorf("body over %d bytes", maxBody)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil // every field is optional
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON body: data after the object")
	}
	return nil
}
