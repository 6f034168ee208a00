package device

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// statusSeeds returns the statuses of a device at every stage: manufactured,
// mid-handshake (pending and certified), provisioned (keys and receipt) and
// restored after a wipe (keys without a receipt).
func statusSeeds(f *testing.F) []*Status {
	fx := newFixture(f)
	fresh := fx.manufacture()
	pending, _ := pendingDevice(f, fx)
	provisioned := fx.manufacture()
	fx.provision(provisioned)
	restored := fx.manufacture()
	q := fx.provision(restored)
	if err := restored.Wipe(ctx); err != nil {
		f.Fatal(err)
	}
	if err := restored.RestoreBackup(ctx, q.backup, q.cert, nil, q.lookup); err != nil {
		f.Fatal(err)
	}
	return []*Status{statusOf(f, fresh), statusOf(f, pending), statusOf(f, provisioned), statusOf(f, restored)}
}

// FuzzAgentResponses decodes arbitrary bytes as the GetStatus response and
// the DeviceInfo an agent sends, and checks what the client makes of them:
// statusFromProto and infoFromProto never panic; every error wraps
// errBadResponse; and what they accept round-trips, both in memory and over
// the wire: statusToProto (infoToProto) and back gives an equal Status
// (Info), whose identities re-encode to the bytes received.
func FuzzAgentResponses(f *testing.F) {
	for _, st := range statusSeeds(f) {
		pb, err := statusToProto(st)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range []proto.Message{pb, pb.Info} {
			b, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})             // an empty info
	f.Add([]byte{0x1a, 0x02, 0x18, 0x03}) // keys with an undefined origin
	f.Fuzz(func(t *testing.T, b []byte) {
		var st v1.GetStatusResponse
		if proto.Unmarshal(b, &st) == nil {
			checkStatusRoundTrip(t, &st)
		}
		var in v1.DeviceInfo
		if proto.Unmarshal(b, &in) == nil {
			checkInfoRoundTrip(t, &in)
		}
	})
}

func checkStatusRoundTrip(t *testing.T, pb *v1.GetStatusResponse) {
	t.Helper()
	st, err := statusFromProto(pb)
	if err != nil {
		if !errors.Is(err, errBadResponse) {
			t.Fatalf("statusFromProto(%v): error %v does not wrap errBadResponse", pb, err)
		}
		return
	}
	again, err := statusToProto(st)
	if err != nil {
		t.Fatalf("statusToProto of an accepted status %+v: %v", st, err)
	}
	if !bytes.Equal(again.GetInfo().GetIdentities(), pb.GetInfo().GetIdentities()) {
		t.Fatalf("identities %x accepted, re-encode as %x", pb.GetInfo().GetIdentities(), again.GetInfo().GetIdentities())
	}
	st2, err := statusFromProto(again)
	if err != nil {
		t.Fatalf("statusFromProto(statusToProto(%+v)): %v", st, err)
	}
	if !reflect.DeepEqual(st2, st) {
		t.Fatalf("status does not round-trip:\n got %+v\nwant %+v", st2, st)
	}
	wire, err := proto.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	var back v1.GetStatusResponse
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatalf("unmarshal %x: %v", wire, err)
	}
	st3, err := statusFromProto(&back)
	if err != nil {
		t.Fatalf("status %+v refused after a trip over the wire: %v", st, err)
	}
	if !reflect.DeepEqual(st3, st) {
		t.Fatalf("status does not round-trip over the wire:\n got %+v\nwant %+v", st3, st)
	}
}

func checkInfoRoundTrip(t *testing.T, pb *v1.DeviceInfo) {
	t.Helper()
	in, err := infoFromProto(pb)
	if err != nil {
		if !errors.Is(err, errBadResponse) {
			t.Fatalf("infoFromProto(%v): error %v does not wrap errBadResponse", pb, err)
		}
		return
	}
	again, err := infoToProto(in)
	if err != nil {
		t.Fatalf("infoToProto of an accepted info %+v: %v", in, err)
	}
	if !bytes.Equal(again.GetIdentities(), pb.GetIdentities()) {
		t.Fatalf("identities %x accepted, re-encode as %x", pb.GetIdentities(), again.GetIdentities())
	}
	in2, err := infoFromProto(again)
	if err != nil {
		t.Fatalf("infoFromProto(infoToProto(%+v)): %v", in, err)
	}
	if !reflect.DeepEqual(in2, in) {
		t.Fatalf("info does not round-trip:\n got %+v\nwant %+v", in2, in)
	}
	wire, err := proto.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	var back v1.DeviceInfo
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatalf("unmarshal %x: %v", wire, err)
	}
	in3, err := infoFromProto(&back)
	if err != nil || !reflect.DeepEqual(in3, in) {
		t.Fatalf("info does not round-trip over the wire: got %+v (%v), want %+v", in3, err, in)
	}
}

// stateSeeds returns the state files of devices at every stage:
// manufactured, pending, pending and certified, provisioned, and wiped.
func stateSeeds(f *testing.F) [][]byte {
	fx := newFixture(f)
	fresh := fx.manufacture()
	uncertified := fx.manufacture()
	raw, _ := fx.newPackage(1)
	if _, err := uncertified.StorePackage(ctx, raw); err != nil {
		f.Fatal(err)
	}
	pending, _ := pendingDevice(f, fx)
	provisioned := fx.manufacture()
	fx.provision(provisioned)
	wiped := fx.manufacture()
	fx.provision(wiped)
	if err := wiped.Wipe(ctx); err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, d := range []*Device{fresh, uncertified, pending, provisioned, wiped} {
		out = append(out, marshalStateOf(f, d))
	}
	return out
}

func marshalStateOf(t testing.TB, d *Device) []byte {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	b, err := d.marshalState(d.mem)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParseState checks the device state file parser (what Load reads):
// parseState never panics, and a state it accepts is a fixed point of
// marshalling: marshalState of it parses again, to a device that reports
// the same Status and marshals to the same bytes.
func FuzzParseState(f *testing.F) {
	for _, s := range stateSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte(`{"format":"chipledger-device-state/v1"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseState(data, LoadOptions{})
		if err != nil {
			return
		}
		st, err := d.Status(ctx)
		if err != nil {
			t.Fatalf("an accepted state has no status: %v\n%s", err, data)
		}
		again := marshalStateOf(t, d)
		d2, err := parseState(again, LoadOptions{})
		if err != nil {
			t.Fatalf("accepted\n%s\nwhich re-marshals to\n%s\nwhich is refused: %v", data, again, err)
		}
		st2, err := d2.Status(ctx)
		if err != nil {
			t.Fatalf("re-parsed state has no status: %v", err)
		}
		if !reflect.DeepEqual(st2, st) {
			t.Fatalf("state does not round-trip:\n got %+v\nwant %+v\ninput\n%s", st2, st, data)
		}
		if third := marshalStateOf(t, d2); !bytes.Equal(third, again) {
			t.Fatalf("marshalState is not a fixed point:\n%s\nthen\n%s", again, third)
		}
	})
}
