package proofs

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/formats/witness"
	"golang.org/x/mod/sumdb/note"
)

var (
	// ErrBadPolicy reports witness policy text that does not parse, or that
	// requires no witness at all.
	ErrBadPolicy = errors.New("proofs: invalid witness policy")

	// ErrNotWitnessed reports a checkpoint, correctly signed by the log,
	// that does not carry the cosignatures its witness policy requires.
	ErrNotWitnessed = errors.New("proofs: checkpoint lacks the witness cosignatures the policy requires")
)

// A WitnessPolicy says which witnesses must cosign a checkpoint before a
// client relies on it. Witnesses are independent parties that cosign a
// checkpoint only if it is consistent with every checkpoint of the same log
// they cosigned before (c2sp.org/tlog-witness), so a checkpoint that
// satisfies the policy is one that no quorum of them saw forked: a log
// cannot show one client a different history from everyone else without
// the collusion of the quorum.
//
// The policy text is the c2sp.org/tlog-policy format, the one Sigsum and
// Tessera read, as parsed by transparency-dev/formats/witness:
//
//	witness w1 <vkey> https://w1.example/
//	witness w2 <vkey> https://w2.example/
//	witness w3 <vkey> https://w3.example/
//	group main 2 w1 w2 w3
//	quorum main
//
// where each vkey is an Ed25519 note verifier key (type 0x01 or 0x04) and a
// witness's cosignatures are cosignature/v1 (c2sp.org/tlog-cosignature).
// Groups nest; a group's threshold may be a number, "any" or "all". Lines
// starting "log" are ignored. The same file configures the ledger nodes,
// which submit checkpoints to the witnesses' URLs, and the clients, which
// only check the cosignatures.
type WitnessPolicy struct {
	quorum    witness.Group
	endpoints map[string]note.Verifier // submission URL → verifier
}

// ParseWitnessPolicy parses a c2sp.org/tlog-policy text. A policy whose
// quorum is "none" is refused: it would make every checkpoint witnessed,
// and a deployment without witnesses should configure no policy instead.
// So is one that breaks a rule of the spec that
// transparency-dev/formats/witness does not check (see checkPolicyRules).
// An error wraps ErrBadPolicy.
func ParseWitnessPolicy(text []byte) (*WitnessPolicy, error) {
	q, err := witness.ParsePolicy(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	if q.N <= 0 || len(q.Components) == 0 {
		return nil, fmt.Errorf("%w: its quorum requires no cosignature; configure no witness policy instead", ErrBadPolicy)
	}
	if err := checkPolicyRules(text); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	return &WitnessPolicy{quorum: q, endpoints: q.Endpoints()}, nil
}

// checkPolicyRules checks the rules of c2sp.org/tlog-policy that
// witness.ParsePolicy, which already accepted text, does not: a group
// lists at least one member, none of them twice, and its threshold k is
// 1 <= k <= n; no two witnesses have the same public key (whatever their
// names, and whether their vkeys are of type 0x01 or 0x04). Each broken
// rule lets fewer cosignatures meet the quorum than the policy names: a
// group of threshold 0 or without members is met by none, a member listed
// twice or a key listed twice counts one cosignature twice. It reads the
// lines as witness.ParsePolicy does.
func checkPolicyRules(text []byte) error {
	keys := make(map[string]string) // public key → witness name
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "witness":
			name, vkey := fields[1], fields[2]
			key, err := vkeyPublicKey(vkey)
			if err != nil {
				return fmt.Errorf("witness %q: %w", name, err)
			}
			if other, ok := keys[string(key)]; ok {
				return fmt.Errorf("witnesses %q and %q have the same public key", other, name)
			}
			keys[string(key)] = name
		case "group":
			name, k, members := fields[1], fields[2], fields[3:]
			if len(members) == 0 {
				return fmt.Errorf("group %q has no members", name)
			}
			if n, err := strconv.ParseUint(k, 10, 8); err == nil && n == 0 {
				return fmt.Errorf("group %q has threshold 0: at least 1 is required", name)
			}
			seen := make(map[string]bool, len(members))
			for _, m := range members {
				if seen[m] {
					return fmt.Errorf("group %q lists %q twice", name, m)
				}
				seen[m] = true
			}
		}
	}
	return sc.Err()
}

// vkeyPublicKey returns the public key a note verifier key
// "<name>+<hash>+<base64 of type ‖ key>" wraps, without its type byte.
func vkeyPublicKey(vkey string) ([]byte, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("verifier key %q is not <name>+<hash>+<key>", vkey)
	}
	key, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(key) < 2 {
		return nil, fmt.Errorf("verifier key %q does not hold a key", vkey)
	}
	return key[1:], nil
}

// Satisfied reports whether signed, a signed note, carries enough valid
// cosignatures to meet the policy's quorum. It does not check the log's own
// signature: VerifyWitnessedCheckpoint does both.
func (p *WitnessPolicy) Satisfied(signed []byte) bool { return p.quorum.Satisfied(signed) }

// Verifiers returns the cosignature verifier of every witness in the policy,
// ordered by key name and hash.
func (p *WitnessPolicy) Verifiers() []note.Verifier {
	vs := slices.Collect(maps.Values(p.endpoints))
	slices.SortFunc(vs, func(a, b note.Verifier) int {
		if a.Name() != b.Name() {
			if a.Name() < b.Name() {
				return -1
			}
			return 1
		}
		return int(int64(a.KeyHash()) - int64(b.KeyHash()))
	})
	return slices.CompactFunc(vs, func(a, b note.Verifier) bool { return a.Name() == b.Name() && a.KeyHash() == b.KeyHash() })
}

// Endpoints returns, for every witness in the policy, the URL its
// add-checkpoint requests go to (the policy's URL joined with
// "/add-checkpoint") and its cosignature verifier.
func (p *WitnessPolicy) Endpoints() map[string]note.Verifier { return maps.Clone(p.endpoints) }

// VerifyWitnessedCheckpoint verifies a signed checkpoint as
// VerifyCheckpointNote does, with every witness of the policy as an extra
// verifier (so an invalid cosignature by a known witness is
// ErrBadSignature), and then that the valid cosignatures meet the policy's
// quorum (ErrNotWitnessed otherwise).
func (v *LogVerifier) VerifyWitnessedCheckpoint(signed []byte, p *WitnessPolicy) (Checkpoint, error) {
	c, n, err := v.VerifyCheckpointNote(signed, p.Verifiers()...)
	if err != nil {
		return Checkpoint{}, err
	}
	if !p.Satisfied(signed) {
		return Checkpoint{}, fmt.Errorf("%w: size %d carries %d valid cosignature(s) by the policy's witnesses", ErrNotWitnessed, c.Size, len(n.Sigs)-1)
	}
	return c, nil
}

// VerifyWitnessedCheckpointBetween is VerifyWitnessedCheckpoint counting
// only the cosignatures made between notBefore and notAfter (inclusive), by
// their cosignature/v1 timestamps: a witness's cosignature says that as of
// its time the checkpoint was the latest it had seen of the log, so
// requiring the quorum's to be recent keeps a node from passing an old,
// genuinely cosigned checkpoint off as the current one (and hiding what the
// log appended since); notAfter keeps a witness whose clock runs ahead from
// making one look recent for good. Too few cosignatures in the window is
// ErrNotWitnessed.
func (v *LogVerifier) VerifyWitnessedCheckpointBetween(signed []byte, p *WitnessPolicy, notBefore, notAfter time.Time) (Checkpoint, error) {
	c, n, err := v.VerifyCheckpointNote(signed, p.Verifiers()...)
	if err != nil {
		return Checkpoint{}, err
	}
	// The note again, with the log's signature and the recent
	// cosignatures only.
	recent := []byte(n.Text + "\n")
	var newest time.Time
	for _, sig := range n.Sigs {
		if sig.Name == v.v.Name() && sig.Hash == v.v.KeyHash() {
			recent = fmt.Appendf(recent, "— %s %s\n", sig.Name, sig.Base64)
			continue
		}
		t, err := fnote.CoSigV1Timestamp(sig)
		if err != nil {
			continue // not a cosignature/v1: it cannot count
		}
		if t.After(newest) {
			newest = t
		}
		if !t.Before(notBefore) && !t.After(notAfter) {
			recent = fmt.Appendf(recent, "— %s %s\n", sig.Name, sig.Base64)
		}
	}
	if !p.Satisfied(recent) {
		when := "none"
		if !newest.IsZero() {
			when = "the newest at " + newest.UTC().Format(time.RFC3339)
		}
		return Checkpoint{}, fmt.Errorf("%w: size %d lacks the quorum's cosignatures made since %s and not after %s (%s)", ErrNotWitnessed, c.Size, notBefore.UTC().Format(time.RFC3339), notAfter.UTC().Format(time.RFC3339), when)
	}
	return c, nil
}
