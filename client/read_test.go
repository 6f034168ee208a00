package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

func (f *fakeLog) client(t *testing.T, addr string, trusted []byte) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Addrs: []string{addr}, LogKey: f.signer.VerifierKey(), Trusted: trusted, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEntriesPagesThroughTheCallLimitAndVerifies(t *testing.T) {
	f, addr := startFakeLog(t, 2500)
	c := f.client(t, addr, nil)
	ctx := context.Background()
	for _, r := range []struct{ start, end uint64 }{{0, 2500}, {999, 2001}, {1000, 1001}, {1234, 1235}, {0, 1}, {2499, 2500}, {3, 1800}} {
		got, err := c.Entries(ctx, r.start, r.end)
		if err != nil {
			t.Fatalf("[%d, %d): %v", r.start, r.end, err)
		}
		if uint64(len(got)) != r.end-r.start {
			t.Fatalf("[%d, %d): %d leaves", r.start, r.end, len(got))
		}
		for i, leaf := range got {
			if want := f.leaves[r.start+uint64(i)]; !bytes.Equal(leaf, want) {
				t.Fatalf("[%d, %d): leaf %d is %q, want %q", r.start, r.end, i, leaf, want)
			}
		}
	}
	if f.maxPage > 1000 {
		t.Errorf("asked for %d entries in one call", f.maxPage)
	}
	if got, err := c.Entries(ctx, 5, 5); err != nil || got != nil {
		t.Errorf("empty range: %v, %v", got, err)
	}
	if _, err := c.Entries(ctx, 2000, 2501); connect.CodeOf(err) != connect.CodeOutOfRange {
		t.Errorf("range beyond the log: %v, want OUT_OF_RANGE", err)
	}
}

func TestInclusionProofReturnsAVerifiedReceipt(t *testing.T) {
	f, addr := startFakeLog(t, 300)
	c := f.client(t, addr, nil)
	v, err := proofs.NewLogVerifier(f.signer.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 1, 150, 299} {
		r, err := c.InclusionProof(context.Background(), i, f.leaves[i])
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		if _, err := r.Verify(v); err != nil {
			t.Fatalf("leaf %d: receipt does not verify offline: %v", i, err)
		}
	}
	if _, err := c.InclusionProof(context.Background(), 3, f.leaves[4]); !errors.Is(err, client.ErrMismatch) {
		t.Errorf("another leaf at the index: %v, want ErrMismatch", err)
	}
}

// TestSavedCheckpointCarriesTrustAcrossRuns saves the trusted checkpoint,
// lets the log grow, and starts a new client from it: the new client proves
// the log extends it, and ConsistencyProof hands out the proof.
func TestSavedCheckpointCarriesTrustAcrossRuns(t *testing.T) {
	f, addr := startFakeLog(t, 1000)
	first := f.client(t, addr, nil)
	if _, _, err := first.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	saved, savedNote := first.Trusted()
	f.grow(777)

	next := f.client(t, addr, savedNote)
	if got, _ := next.Trusted(); got != saved {
		t.Fatalf("starts trusting %+v, want %+v", got, saved)
	}
	cp, _, err := next.Checkpoint(context.Background())
	if err != nil || cp.Size != 1777 {
		t.Fatalf("checkpoint %+v, %v; want size 1777", cp, err)
	}
	cons, err := next.ConsistencyProof(context.Background(), savedNote)
	if err != nil {
		t.Fatal(err)
	}
	if cons.From != saved || cons.To != cp {
		t.Fatalf("consistency from %+v to %+v", cons.From, cons.To)
	}
	if err := proofs.VerifyConsistency(cons.From.Size, cons.To.Size, cons.Proof, cons.From.Hash, cons.To.Hash); err != nil {
		t.Fatalf("the handed-out proof does not verify: %v", err)
	}
}

func TestConsistencyProofOfAnotherHistoryIsAFork(t *testing.T) {
	f, addr := startFakeLog(t, 50)
	c := f.client(t, addr, nil)
	if _, _, err := c.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	var root [32]byte
	root[0] = 1
	forged, err := f.signer.Sign(20, root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ConsistencyProof(context.Background(), forged)
	var fe *client.ForkError
	if !errors.As(err, &fe) || !bytes.Equal(fe.New, forged) {
		t.Fatalf("got %v, want a *ForkError with the forged checkpoint", err)
	}
}

func TestLogInfoVerifiesKeyAndStations(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	l.appendEscrow(c, 1)
	info, err := c.LogInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.VerifierKey != l.vkey || info.Origin != testOrigin {
		t.Errorf("log %q key %q", info.Origin, info.VerifierKey)
	}
	if len(info.Stations) != 1 {
		t.Fatalf("%d stations, want 1", len(info.Stations))
	}
	st := info.Stations[0]
	if st.ID != l.pki.StationID() || !bytes.Equal(st.Registration.Certificate, l.pki.Station.Raw) {
		t.Errorf("station %x at %d", st.ID, st.RegistrationIndex)
	}
	if len(info.ManufacturerTrust) == 0 {
		t.Error("no manufacturer trust")
	}
}

// TestLogInfoShowsARevocation: a revoked station is listed with its
// revocation, verified against the leaf at its index; a standing one with
// none.
func TestLogInfoShowsARevocation(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	info, err := c.LogInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Stations) != 1 || info.Stations[0].Revocation != nil || info.Stations[0].RevocationIndex != 0 {
		t.Fatalf("a standing station: %+v, want it listed without a revocation", info.Stations)
	}
	id := l.pki.StationID()
	resp, err := revokeStation(l, id, "line 1 decommissioned")
	if err != nil {
		t.Fatal(err)
	}
	if info, err = c.LogInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := info.Stations[0]
	if st.Revocation == nil || st.Revocation.StationID != id || st.Revocation.Reason != "line 1 decommissioned" || st.RevocationIndex != resp.Receipt.Index {
		t.Fatalf("a revoked station: revocation %+v at index %d, want the one at index %d", st.Revocation, st.RevocationIndex, resp.Receipt.Index)
	}
}

// revokeStation revokes station id through the admin API of l's first
// node.
func revokeStation(l *testLog, id [32]byte, reason string) (*v1.RevokeStationResponse, error) {
	admin := chipledgerv1connect.NewAdminServiceClient(h2cClient(), "http://"+l.cluster.Addrs()[0])
	resp, err := admin.RevokeStation(context.Background(), connect.NewRequest(&v1.RevokeStationRequest{StationId: id[:], Reason: reason}))
	if err != nil {
		return nil, fmt.Errorf("revoke station %x: %w", id, err)
	}
	return resp.Msg, nil
}

// TestLogInfoRefusesAnAlteredKeyOriginOrStation puts a proxy in front of a
// node that alters one thing in its GetLogInfo answer: each alteration
// fails LogInfo with ErrMismatch and no result. The verifier key and origin
// must be the pinned log's; a station's ID must be the hash of its
// certificate, and the leaf at its registration index must register that
// certificate.
func TestLogInfoRefusesAnAlteredKeyOriginOrStation(t *testing.T) {
	l := startLog(t, 1, nil)
	honest := l.client()
	l.registerStation(honest)
	escrow := l.appendEscrow(honest, 1).Receipt.Index
	_, otherKey, err := ledgerKey(testOrigin) // the same origin, another key
	if err != nil {
		t.Fatal(err)
	}
	otherCert := l.pki.DeviceCA.Raw // a DER certificate, not the station's
	for _, tc := range []struct {
		name  string
		alter func(r *v1.GetLogInfoResponse)
	}{
		{"another verifier key", func(r *v1.GetLogInfoResponse) { r.VerifierKey = otherKey }},
		{"another origin", func(r *v1.GetLogInfoResponse) { r.Origin = "other.example/log" }},
		{"a station ID that is not its certificate's hash", func(r *v1.GetLogInfoResponse) { r.Stations[0].StationId[0] ^= 1 }},
		{"another certificate with its own ID", func(r *v1.GetLogInfoResponse) {
			id := ledger.StationID(otherCert)
			r.Stations[0].Certificate, r.Stations[0].StationId = otherCert, id[:]
		}},
		{"a registration index at another leaf", func(r *v1.GetLogInfoResponse) { r.Stations[0].RegistrationIndex = escrow }},
		{"a revocation index at another leaf", func(r *v1.GetLogInfoResponse) { r.Stations[0].RevocationIndex = escrow }},
		{"a revocation index at the registration", func(r *v1.GetLogInfoResponse) {
			r.Stations[0].RevocationIndex = r.Stations[0].RegistrationIndex
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, addr := startProxy(t, l.cluster.Addrs()[0])
			p.setTamper(func(_ context.Context, _ string, _, resp proto.Message) error {
				if r, ok := resp.(*v1.GetLogInfoResponse); ok {
					if len(r.Stations) != 1 {
						return fmt.Errorf("the node lists %d stations, want 1", len(r.Stations))
					}
					tc.alter(r)
				}
				return nil
			})
			c := l.clientWith(client.Options{Addrs: []string{addr}, Retry: client.RetryPolicy{MaxAttempts: 1}})
			info, err := c.LogInfo(context.Background())
			if info != nil {
				t.Fatalf("got log info %q with key %q and %d stations (err %v); want ErrMismatch and no result", info.Origin, info.VerifierKey, len(info.Stations), err)
			}
			if !errors.Is(err, client.ErrMismatch) {
				t.Fatalf("got %v, want ErrMismatch", err)
			}
		})
	}
}
