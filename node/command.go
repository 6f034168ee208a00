package node

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/chipledger/chipledger/ledger"
)

// Raft log entries carry commands with one strict encoding:
//
//	command = u8 version (1) ‖ u8 type ‖ body
//	type 1, batch:  u16 count ‖ count × opaque leaf<1..2^16-1>
//	type 2, member: opaque node_id<1..255> ‖ opaque api_address<0..255>
//	type 3, genesis: no body
//	type 4, revoke: opaque leaf<1..2^16-1>
//	type 5, witnessed: opaque signed_checkpoint<1..2^16-1>
//
// A batch is a list of leaves to admit and append in order; a member command
// records the API address of a node (empty: forget it), so that every
// replica can point clients at the leader; genesis starts an empty log with
// its genesis index-root leaf (a no-op on a log that has one); revoke
// appends a station revocation leaf, which only the admin API proposes;
// witnessed records a checkpoint of the log that its witnesses cosigned (the
// leader collects the cosignatures), so that every replica serves it.
const commandVersion = 1

type commandType uint8

const (
	commandBatch     commandType = 1
	commandMember    commandType = 2
	commandGenesis   commandType = 3
	commandRevoke    commandType = 4
	commandWitnessed commandType = 5
)

// maxBatchLeaves bounds a batch so that it fits the u16 count.
const maxBatchLeaves = 1<<16 - 1

type command struct {
	typ     commandType
	leaves  [][]byte // batch; revoke: exactly one
	nodeID  string   // member
	apiAddr string   // member
	signed  []byte   // witnessed: the cosigned checkpoint
}

var errBadCommand = errors.New("malformed raft command")

func encodeBatch(leaves [][]byte) ([]byte, error) {
	if len(leaves) == 0 || len(leaves) > maxBatchLeaves {
		return nil, fmt.Errorf("batch of %d leaves: want 1 to %d", len(leaves), maxBatchLeaves)
	}
	size := 4
	for _, l := range leaves {
		size += 2 + len(l)
	}
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, size))
	b.AddUint8(commandVersion)
	b.AddUint8(uint8(commandBatch))
	b.AddUint16(uint16(len(leaves)))
	for _, l := range leaves {
		if len(l) == 0 || len(l) > ledger.MaxLeafSize {
			return nil, fmt.Errorf("leaf of %d bytes: %w", len(l), ledger.ErrLeafTooLarge)
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(l) })
	}
	return b.Bytes()
}

// maxMemberField bounds a member's node ID and API address, which member
// commands carry with a one-byte length.
const maxMemberField = 255

func encodeMember(nodeID, apiAddr string) ([]byte, error) {
	if len(nodeID) == 0 || len(nodeID) > maxMemberField || len(apiAddr) > maxMemberField {
		return nil, fmt.Errorf("member %q at %q: node ID must be 1 to %d bytes and the address at most %d", nodeID, apiAddr, maxMemberField, maxMemberField)
	}
	var b cryptobyte.Builder
	b.AddUint8(commandVersion)
	b.AddUint8(uint8(commandMember))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(nodeID)) })
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(apiAddr)) })
	return b.Bytes()
}

func encodeRevoke(leaf []byte) ([]byte, error) {
	if len(leaf) == 0 || len(leaf) > ledger.MaxLeafSize {
		return nil, fmt.Errorf("revocation leaf of %d bytes: %w", len(leaf), ledger.ErrLeafTooLarge)
	}
	var b cryptobyte.Builder
	b.AddUint8(commandVersion)
	b.AddUint8(uint8(commandRevoke))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(leaf) })
	return b.Bytes()
}

func encodeWitnessed(signed []byte) ([]byte, error) {
	if len(signed) == 0 || len(signed) > 1<<16-1 {
		return nil, fmt.Errorf("cosigned checkpoint of %d bytes: want 1 to %d", len(signed), 1<<16-1)
	}
	var b cryptobyte.Builder
	b.AddUint8(commandVersion)
	b.AddUint8(uint8(commandWitnessed))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(signed) })
	return b.Bytes()
}

func encodeGenesis() []byte { return []byte{commandVersion, uint8(commandGenesis)} }

// decodeCommand parses a command. Leaves alias data.
func decodeCommand(data []byte) (command, error) {
	s := cryptobyte.String(data)
	var version, typ uint8
	if !s.ReadUint8(&version) || !s.ReadUint8(&typ) {
		return command{}, fmt.Errorf("%w: truncated header", errBadCommand)
	}
	if version != commandVersion {
		return command{}, fmt.Errorf("%w: version %d, want %d", errBadCommand, version, commandVersion)
	}
	c := command{typ: commandType(typ)}
	switch c.typ {
	case commandBatch:
		var n uint16
		if !s.ReadUint16(&n) || n == 0 {
			return command{}, fmt.Errorf("%w: bad leaf count", errBadCommand)
		}
		c.leaves = make([][]byte, n)
		for i := range c.leaves {
			var leaf cryptobyte.String
			if !s.ReadUint16LengthPrefixed(&leaf) || len(leaf) == 0 {
				return command{}, fmt.Errorf("%w: leaf %d of %d truncated or empty", errBadCommand, i, n)
			}
			c.leaves[i] = leaf
		}
	case commandMember:
		var id, addr cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&id) || len(id) == 0 || !s.ReadUint8LengthPrefixed(&addr) {
			return command{}, fmt.Errorf("%w: bad member record", errBadCommand)
		}
		c.nodeID, c.apiAddr = string(id), string(addr)
	case commandGenesis:
	case commandRevoke:
		var leaf cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&leaf) || len(leaf) == 0 {
			return command{}, fmt.Errorf("%w: revocation leaf truncated or empty", errBadCommand)
		}
		c.leaves = [][]byte{leaf}
	case commandWitnessed:
		var signed cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&signed) || len(signed) == 0 {
			return command{}, fmt.Errorf("%w: cosigned checkpoint truncated or empty", errBadCommand)
		}
		c.signed = signed
	default:
		return command{}, fmt.Errorf("%w: unknown type %d", errBadCommand, typ)
	}
	if !s.Empty() {
		return command{}, fmt.Errorf("%w: %d trailing bytes", errBadCommand, len(s))
	}
	return c, nil
}
