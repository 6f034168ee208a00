package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
)

// FuzzDecodeCommand checks that the Raft command decoder, which reads what
// the leader sends, refuses what it cannot parse and round-trips what it
// accepts.
func FuzzDecodeCommand(f *testing.F) {
	batch, _ := encodeBatch([][]byte{{0, 1, 2}, {3}})
	member, _ := encodeMember("n1", "127.0.0.1:8080")
	revoke, _ := encodeRevoke([]byte{0, 4, 9})
	witnessed, _ := encodeWitnessed([]byte("origin\n1\nroot\n\n— origin sig\n"))
	for _, seed := range [][]byte{batch, member, revoke, witnessed, encodeGenesis(), {1}, {1, 1, 0, 0}, {2, 1}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data)
		if err != nil {
			return
		}
		var again []byte
		switch c.typ {
		case commandBatch:
			again, err = encodeBatch(c.leaves)
		case commandMember:
			again, err = encodeMember(c.nodeID, c.apiAddr)
		case commandRevoke:
			again, err = encodeRevoke(c.leaves[0])
		case commandGenesis:
			again = encodeGenesis()
		case commandWitnessed:
			again, err = encodeWitnessed(c.signed)
		default:
			t.Fatalf("decoded an unknown type %d", c.typ)
		}
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("%x decodes and re-encodes as %x", data, again)
		}
	})
}

// FuzzSnapshotHeader checks the snapshot header reader, which reads what a
// leader streams to a lagging node (or, for "CLS1", a node restores from
// a snapshot an older version wrote).
func FuzzSnapshotHeader(f *testing.F) {
	md := map[string][]byte{"member/n1": []byte("127.0.0.1:1")}
	hdr := snapshotHeader(ledger.TreeState{Size: 3}, 7, md)
	f.Add(hdr)
	f.Add(v1SnapshotHeader(hdr))
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		size, root, through, md, err := readSnapshotHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		hdr := snapshotHeader(ledger.TreeState{Size: size, Root: root}, through, md)
		if bytes.HasPrefix(data, []byte(snapshotMagicV1)) {
			if through != 0 {
				t.Fatalf("%x: a CLS1 header read with through %d", data, through)
			}
			hdr = v1SnapshotHeader(hdr)
		}
		if !bytes.HasPrefix(data, hdr) {
			t.Fatalf("%x reads as a header that encodes as %x", data, hdr)
		}
	})
}

// v1SnapshotHeader turns a header into the "CLS1" form, which has no
// through.
func v1SnapshotHeader(hdr []byte) []byte {
	v1 := append([]byte(snapshotMagicV1), hdr[4:44]...)
	return append(v1, hdr[52:]...)
}

// apiMethods are the API methods FuzzAPIRequests calls: every one that a
// client without credentials can reach and that cannot change the
// cluster's membership.
var apiMethods = []string{
	"/chipledger.v1.LedgerService/Append",
	"/chipledger.v1.LedgerService/GetCheckpoint",
	"/chipledger.v1.LedgerService/GetEntries",
	"/chipledger.v1.LedgerService/GetInclusionProof",
	"/chipledger.v1.LedgerService/GetConsistencyProof",
	"/chipledger.v1.LedgerService/LookupChip",
	"/chipledger.v1.LedgerService/GetLogInfo",
	"/chipledger.v1.AdminService/Status",
	"/chipledger.v1.AdminService/RevokeStation",
}

// FuzzAPIRequests posts arbitrary request bodies to a running node's API,
// as Connect (binary protobuf) messages: every answer must be a success or
// a deliberate error, never an internal one, and the node must keep
// serving.
func FuzzAPIRequests(f *testing.F) {
	c := newTestCluster(f, 1, nil)
	c.registerStation()
	for _, leaf := range c.escrowLeaves(0, 3) {
		if _, err := c.append(context.Background(), 0, leaf); err != nil {
			f.Fatal(err)
		}
	}
	base := "http://" + c.nodes[0].APIAddr()
	hc := &http.Client{}
	for i := range apiMethods {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{0x08, 0x01, 0x10, 0x03})       // fields 1 and 2 = 1, 3
		f.Add(uint8(i), []byte{0x0a, 0x03, 0x00, 0x01, 0x02}) // field 1 = 3 bytes
	}
	f.Fuzz(func(t *testing.T, method uint8, body []byte) {
		path := apiMethods[int(method)%len(apiMethods)]
		// Reads may wait for a tree size that never comes (long polls):
		// the fuzzer does not wait for them.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/proto")
		resp, err := hc.Do(req)
		if errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			return
		}
		var e struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("%s answered %d with %q, not a Connect error", path, resp.StatusCode, out)
		}
		if slices.Contains([]string{connect.CodeInternal.String(), connect.CodeUnknown.String()}, e.Code) {
			t.Fatalf("%s with body %x: %s: %s", path, body, e.Code, e.Message)
		}
	})
}
