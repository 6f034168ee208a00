package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// erring is a ledger service whose GetCheckpoint fails with err.
type erring struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	err error
}

func (s erring) GetCheckpoint(context.Context, *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	return nil, s.err
}

// wireError returns err as a client receives it from a node.
func wireError(t *testing.T, err error) error {
	t.Helper()
	_, h := chipledgerv1connect.NewLedgerServiceHandler(erring{err: err})
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, got := chipledgerv1connect.NewLedgerServiceClient(http.DefaultClient, srv.URL).GetCheckpoint(context.Background(), connect.NewRequest(&v1.GetCheckpointRequest{}))
	if !connect.IsWireError(got) {
		t.Fatalf("%v: not a wire error", got)
	}
	return got
}

func TestFailedCallTellsVerdictsFromTransientAndUnexpectedErrors(t *testing.T) {
	reused := fmt.Errorf("chip c: %w: epoch 1 is logged at index 9", ledger.ErrEpochReused)
	for _, tc := range []struct {
		name       string
		err        error
		outcome    Outcome
		unexpected bool
	}{
		{"epoch reused", wireError(t, connect.NewError(connect.CodeAlreadyExists, reused)), Refused, false},
		{"bad entry", wireError(t, connect.NewError(connect.CodeInvalidArgument, ledger.ErrMalformed)), Refused, false},
		{"no leader", wireError(t, connect.NewError(connect.CodeUnavailable, errors.New("no leader"))), Ambiguous, false},
		{"pushback", wireError(t, connect.NewError(connect.CodeResourceExhausted, errors.New("queue full"))), Ambiguous, false},
		{"timeout", wireError(t, connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded)), Ambiguous, false},
		{"internal", wireError(t, connect.NewError(connect.CodeInternal, errors.New("boom"))), Ambiguous, true},
		{"unknown", wireError(t, connect.NewError(connect.CodeUnknown, errors.New("boom"))), Ambiguous, true},
		{"not found", wireError(t, connect.NewError(connect.CodeNotFound, errors.New("no such thing"))), Ambiguous, true},
		{"context", fmt.Errorf("client: append: %w", context.DeadlineExceeded), Ambiguous, false},
		{"transport", connect.NewError(connect.CodeUnavailable, errors.New("connection refused")), Ambiguous, false},
		{"transport, reset stream", connect.NewError(connect.CodeInternal, errors.New("stream error: INTERNAL_ERROR; received from peer")), Ambiguous, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := failedCall(tc.err)
			if a.Outcome != tc.outcome || (a.Unexpected != nil) != tc.unexpected || a.Err != tc.err {
				t.Errorf("failedCall(%v) = %+v; want outcome %v, unexpected %v", tc.err, a, tc.outcome, tc.unexpected)
			}
		})
	}
	if !isEpochReused(wireError(t, connect.NewError(connect.CodeAlreadyExists, reused))) {
		t.Error("the epoch-reused refusal is not recognised")
	}
	if isEpochReused(wireError(t, connect.NewError(connect.CodeAlreadyExists, errors.New("station already registered")))) {
		t.Error("another ALREADY_EXISTS is taken for the epoch-reused refusal")
	}
}
