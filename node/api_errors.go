package node

import (
	"context"
	"errors"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
)

// apiErr gives an error of the router or the session manager the API
// status of its kind (the first entry of apiStatus it matches), keeping its
// own message; any other error is returned as it is.
func apiErr(err error) error {
	for _, s := range apiStatus {
		for _, e := range s.errs {
			if errors.Is(err, e) {
				return statusErr{kind: s.kind, err: err}
			}
		}
	}
	return err
}

// apiStatus is the API status of each error the roles behind the API return.
var apiStatus = []struct {
	kind error
	errs []error
}{
	{api.ErrBadRequest, []error{session.ErrBadParams, router.ErrBadLease}},
	{api.ErrModelNotFound, []error{session.ErrUnknownModel}},
	{api.ErrNotFound, []error{session.ErrNotFound, router.ErrUnknownReservation}},
	{api.ErrConflict, []error{session.ErrEnded, session.ErrTaskLimit, router.ErrEnded}},
	{api.ErrTooMany, []error{session.ErrQueueFull, session.ErrTooMany, session.ErrBusy}},
	{api.ErrBadGateway, []error{session.ErrTaskFailed, session.ErrStreamBroken}},
	{api.ErrUnavailable, []error{session.ErrNoMiner, session.ErrNotRunning, router.ErrNoMiner, router.ErrNotRunning}},
	{api.ErrTimeout, []error{context.DeadlineExceeded}},
}

// statusErr gives err the API status of kind, keeping err's own message.
type statusErr struct{ kind, err error }

func (e statusErr) Error() string   { return e.err.Error() }
func (e statusErr) Unwrap() []error { return []error{e.kind, e.err} }
