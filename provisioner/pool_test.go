package provisioner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chipledger/chipledger/ledger"
)

// testChip returns a 16-byte chip ID numbered i.
func testChip(i int) ledger.ChipID {
	c := make(ledger.ChipID, ledger.DefaultChipIDLen)
	c[0] = 0xc1
	binary.BigEndian.PutUint64(c[8:], uint64(i))
	return c
}

// openPool opens (creating if needed) the pool at path with its default key
// file, and closes it at the end of the test.
func openPool(t *testing.T, path string) *Pool {
	t.Helper()
	p, err := OpenPool(path, PoolOptions{Create: true, LockTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// newPool creates a pool in a temporary directory holding n keys.
func newPool(t *testing.T, n int) *Pool {
	t.Helper()
	p := openPool(t, filepath.Join(t.TempDir(), "pool.db"))
	if n > 0 {
		if err := p.Fill(n, nil); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// reopen closes p and opens its pool again, as a restarted station would.
func reopen(t *testing.T, p *Pool) *Pool {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	return openPool(t, p.Path())
}

func reserve(t *testing.T, p *Pool, chip ledger.ChipID) (KeyID, *ecdsa.PrivateKey) {
	t.Helper()
	id, key, err := p.Reserve(chip)
	if err != nil {
		t.Fatalf("Reserve(%s): %v", chip, err)
	}
	if key == nil || id == 0 {
		t.Fatalf("Reserve(%s) = %d, %v", chip, id, key)
	}
	return id, key
}

func wantStatus(t *testing.T, p *Pool, want PoolStatus) {
	t.Helper()
	got, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("status %+v, want %+v", got, want)
	}
}

func scalar(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPoolStateMachine(t *testing.T) {
	p := newPool(t, 3)
	clock := time.UnixMilli(1_750_000_000_000)
	p.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	a, b, never := testChip(1), testChip(2), testChip(99)
	wantStatus(t, p, PoolStatus{Available: 3})

	idA, _ := reserve(t, p, a)
	wantStatus(t, p, PoolStatus{Available: 2, Reserved: 1})
	if id, ok, err := p.Reservation(a); err != nil || !ok || id != idA {
		t.Errorf("Reservation(a) = %d, %v, %v; want %d, true", id, ok, err, idA)
	}

	if err := p.Consume(a); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, p, PoolStatus{Available: 2, Consumed: 1})
	if _, ok, _ := p.Reservation(a); ok {
		t.Error("chip a still has a reservation after Consume")
	}
	if err := p.Consume(a); err != nil {
		t.Errorf("second Consume: %v, want nil (idempotent)", err)
	}
	if err := p.Destroy(a, "too late"); !errors.Is(err, ErrNoReservation) || !strings.Contains(err.Error(), "consumed") {
		t.Errorf("Destroy after Consume: %v, want ErrNoReservation saying it was consumed", err)
	}

	idB, _ := reserve(t, p, b)
	if err := p.Destroy(b, "device failed the round-trip check"); err != nil {
		t.Fatal(err)
	}
	if err := p.Destroy(b, "again"); err != nil {
		t.Errorf("second Destroy: %v, want nil (idempotent)", err)
	}
	if err := p.Consume(b); !errors.Is(err, ErrNoReservation) || !strings.Contains(err.Error(), "destroyed") {
		t.Errorf("Consume after Destroy: %v, want ErrNoReservation saying it was destroyed", err)
	}
	if err := p.Consume(never); !errors.Is(err, ErrNoReservation) {
		t.Errorf("Consume of a chip never reserved: %v, want ErrNoReservation", err)
	}
	if err := p.Destroy(never, "x"); !errors.Is(err, ErrNoReservation) {
		t.Errorf("Destroy of a chip never reserved: %v, want ErrNoReservation", err)
	}
	wantStatus(t, p, PoolStatus{Available: 1, Consumed: 1, Destroyed: 1})

	p = reopen(t, p)
	wantStatus(t, p, PoolStatus{Available: 1, Consumed: 1, Destroyed: 1})
	var records []AuditRecord
	for rec, err := range p.Audit() {
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, rec)
	}
	if len(records) != 2 {
		t.Fatalf("%d audit records, want 2: %+v", len(records), records)
	}
	ra, rb := records[0], records[1]
	if ra.Seq != 1 || !ra.Chip.Equal(a) || ra.KeyID != idA || ra.Outcome != OutcomeConsumed || ra.Reason != "" ||
		!ra.ReservedAt.Equal(clock.Add(-3*time.Second)) || !ra.At.Equal(clock.Add(-2*time.Second)) {
		t.Errorf("audit record of a: %+v", ra)
	}
	if rb.Seq != 2 || !rb.Chip.Equal(b) || rb.KeyID != idB || rb.Outcome != OutcomeDestroyed ||
		rb.Reason != "device failed the round-trip check" || !rb.At.Equal(clock) {
		t.Errorf("audit record of b: %+v", rb)
	}
	if last, ok, err := p.LastAudit(b); err != nil || !ok || !reflect.DeepEqual(last, rb) {
		t.Errorf("LastAudit(b) = %+v, %v, %v; want %+v", last, ok, err, rb)
	}
	if _, ok, err := p.LastAudit(never); err != nil || ok {
		t.Errorf("LastAudit of a chip never reserved = %v, %v", ok, err)
	}

	// A re-provisioning of chip a gets a new key.
	if id, _ := reserve(t, p, a); id == idA || id == idB {
		t.Errorf("a reserved again got key %d, an old key", id)
	}
}

func TestReserveTakesKeysInTheOrderTheyWereAdded(t *testing.T) {
	p := newPool(t, 5)
	for i := range 5 {
		if id, _ := reserve(t, p, testChip(i)); id != KeyID(i+1) {
			t.Errorf("reservation %d got key %d, want %d", i, id, i+1)
		}
	}
}

func TestReserveIsIdempotentForAChipAndDistinctAcrossChips(t *testing.T) {
	p := newPool(t, 4)
	a, b := testChip(1), testChip(2)
	idA, keyA := reserve(t, p, a)
	idA2, keyA2 := reserve(t, p, a)
	if idA2 != idA || !keyA2.Equal(keyA) {
		t.Errorf("second Reserve(a) gave key %d, want the same key %d", idA2, idA)
	}
	idB, keyB := reserve(t, p, b)
	if idB == idA || keyB.Equal(keyA) {
		t.Errorf("chip b got chip a's key %d", idA)
	}
	wantStatus(t, p, PoolStatus{Available: 2, Reserved: 2})
}

func TestReservedKeySurvivesReopenAndStaysWithItsChip(t *testing.T) {
	p := newPool(t, 3)
	a, b := testChip(1), testChip(2)
	idA, keyA := reserve(t, p, a)

	p = reopen(t, p) // the station crashed between Reserve and Consume
	if id, ok, err := p.Reservation(a); err != nil || !ok || id != idA {
		t.Fatalf("after reopening, Reservation(a) = %d, %v, %v; want %d", id, ok, err, idA)
	}
	idB, keyB := reserve(t, p, b)
	if idB == idA || keyB.Equal(keyA) {
		t.Errorf("after reopening, chip b got chip a's key %d", idA)
	}
	idA2, keyA2 := reserve(t, p, a)
	if idA2 != idA || !keyA2.Equal(keyA) {
		t.Errorf("after reopening, Reserve(a) gave key %d, want %d", idA2, idA)
	}
	if err := p.Consume(a); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, p, PoolStatus{Available: 1, Reserved: 1, Consumed: 1})
}

// crashHelperEnv makes TestPoolCrashHelper, run as a child process, reserve
// a key and exit without closing the pool.
const crashHelperEnv = "CHIPLEDGER_TEST_POOL_CRASH"

func TestPoolCrashHelper(t *testing.T) {
	arg := os.Getenv(crashHelperEnv)
	if arg == "" {
		t.Skip("only run as a child process by TestReservationSurvivesAProcessCrash")
	}
	path, chipHex, _ := strings.Cut(arg, ",")
	chip, err := ledger.ParseChipID(chipHex)
	if err != nil {
		t.Fatal(err)
	}
	p, err := OpenPool(path, PoolOptions{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id, key, err := p.Reserve(chip)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := key.Bytes()
	fmt.Printf("RESERVED %d %x\n", id, d)
	os.Exit(0) // no Close, no deferred calls: a crash right after Reserve returned
}

func reserveInChildProcess(t *testing.T, path string, chip ledger.ChipID) (KeyID, []byte) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPoolCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path+","+chip.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "RESERVED" {
			id, err1 := strconv.ParseUint(f[1], 10, 64)
			d, err2 := hex.DecodeString(f[2])
			if err1 == nil && err2 == nil {
				return KeyID(id), d
			}
		}
	}
	t.Fatalf("child printed no reservation:\n%s", out)
	return 0, nil
}

func TestReservationSurvivesAProcessCrash(t *testing.T) {
	p := newPool(t, 3)
	path := p.Path()
	p.Close()
	a, b := testChip(1), testChip(2)

	idA, dA := reserveInChildProcess(t, path, a)
	// A second station process resumes chip a after the crash.
	if id, d := reserveInChildProcess(t, path, a); id != idA || !bytes.Equal(d, dA) {
		t.Errorf("resumed Reserve(a) in a new process gave key %d, want %d", id, idA)
	}
	p = openPool(t, path)
	if id, key := reserve(t, p, a); id != idA || !bytes.Equal(scalar(t, key), dA) {
		t.Errorf("Reserve(a) after the crashes gave key %d, want %d", id, idA)
	}
	if id, key := reserve(t, p, b); id == idA || bytes.Equal(scalar(t, key), dA) {
		t.Errorf("chip b got chip a's key %d", idA)
	}
	wantStatus(t, p, PoolStatus{Available: 1, Reserved: 2})
}

func TestConcurrentReservesForDifferentChipsGetDistinctKeys(t *testing.T) {
	const n = 16
	p := newPool(t, n+4)
	ids := make([]KeyID, n)
	keys := make([]*ecdsa.PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ids[i], keys[i], errs[i] = p.Reserve(testChip(i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seenID := map[KeyID]int{}
	seenKey := map[string]int{}
	for i := range n {
		if j, dup := seenID[ids[i]]; dup {
			t.Errorf("chips %d and %d both got key %d", j, i, ids[i])
		}
		seenID[ids[i]] = i
		d := string(scalar(t, keys[i]))
		if j, dup := seenKey[d]; dup {
			t.Errorf("chips %d and %d got the same private key", j, i)
		}
		seenKey[d] = i
		if id, ok, err := p.Reservation(testChip(i)); err != nil || !ok || id != ids[i] {
			t.Errorf("Reservation(chip %d) = %d, %v, %v; want %d", i, id, ok, err, ids[i])
		}
	}
	wantStatus(t, p, PoolStatus{Available: 4, Reserved: n})
}

func TestConcurrentReservesForOneChipGetOneKey(t *testing.T) {
	const n = 16
	p := newPool(t, n)
	chip := testChip(7)
	ids := make([]KeyID, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ids[i], _, errs[i] = p.Reserve(chip) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if ids[i] != ids[0] {
			t.Fatalf("Reserve of one chip gave keys %v", ids)
		}
	}
	wantStatus(t, p, PoolStatus{Available: n - 1, Reserved: 1})
}

func TestDestroyedKeyIsNeverHandedOutAgain(t *testing.T) {
	p := newPool(t, 5)
	a := testChip(1)
	idA, keyA := reserve(t, p, a)
	dA := scalar(t, keyA)
	if err := p.Destroy(a, "chip failed to decrypt its backup"); err != nil {
		t.Fatal(err)
	}
	p = reopen(t, p)
	chips := []ledger.ChipID{a, testChip(2), testChip(3), testChip(4), testChip(5)}
	for _, chip := range chips[:4] {
		id, key := reserve(t, p, chip)
		if id == idA || bytes.Equal(scalar(t, key), dA) {
			t.Fatalf("chip %s got the destroyed key %d", chip, idA)
		}
	}
	if _, _, err := p.Reserve(chips[4]); !errors.Is(err, ErrPoolEmpty) {
		t.Errorf("Reserve after draining the pool: %v, want ErrPoolEmpty (the destroyed key must not come back)", err)
	}
	wantStatus(t, p, PoolStatus{Reserved: 4, Destroyed: 1})
}

func TestReserveFromAnEmptyPoolSaysToFillIt(t *testing.T) {
	p := newPool(t, 2)
	reserve(t, p, testChip(1))
	reserve(t, p, testChip(2))
	_, _, err := p.Reserve(testChip(3))
	if !errors.Is(err, ErrPoolEmpty) || !strings.Contains(err.Error(), "chipledger pool fill --pool "+p.Path()) {
		t.Errorf("Reserve from an empty pool: %v, want ErrPoolEmpty telling to run chipledger pool fill", err)
	}
	if _, _, err := p.Reserve(testChip(1)); err != nil {
		t.Errorf("Reserve of an already reserved chip in an empty pool: %v", err)
	}
	if _, _, err := newPool(t, 0).Reserve(testChip(1)); !errors.Is(err, ErrPoolEmpty) {
		t.Errorf("Reserve from a new pool: %v, want ErrPoolEmpty", err)
	}
}

func TestPoolRejectsInvalidArguments(t *testing.T) {
	p := newPool(t, 1)
	if _, _, err := p.Reserve(ledger.ChipID{1, 2, 3}); !errors.Is(err, ledger.ErrInvalidChipID) {
		t.Errorf("Reserve of a 3-byte chip ID: %v, want ErrInvalidChipID", err)
	}
	chip := testChip(1)
	reserve(t, p, chip)
	for _, reason := range []string{"", strings.Repeat("x", MaxDestroyReason+1), "\xff"} {
		if err := p.Destroy(chip, reason); err == nil {
			t.Errorf("Destroy with reason %.10q succeeded", reason)
		}
	}
	if _, ok, _ := p.Reservation(chip); !ok {
		t.Error("a refused Destroy removed the reservation")
	}
	if err := p.Fill(0, nil); err == nil {
		t.Error("Fill(0) succeeded")
	}
}

func TestFillAddsKeysInBatchesAndReportsProgress(t *testing.T) {
	p := newPool(t, 0)
	p.fillBatch = 10
	var progress []int
	if err := p.Fill(25, func(done int) { progress = append(progress, done) }); err != nil {
		t.Fatal(err)
	}
	if want := []int{10, 20, 25}; !slices.Equal(progress, want) {
		t.Errorf("progress %v, want %v", progress, want)
	}
	wantStatus(t, p, PoolStatus{Available: 25})
	if err := p.Fill(5, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, p, PoolStatus{Available: 30})
}

func TestCancelledFillKeepsTheBatchesAdded(t *testing.T) {
	p := newPool(t, 0)
	p.fillBatch = 10
	ctx, cancel := context.WithCancel(context.Background())
	err := p.FillContext(ctx, 100, func(int) { cancel() })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "10 of 100") {
		t.Errorf("cancelled fill: %v, want context.Canceled after 10 of 100 keys", err)
	}
	wantStatus(t, p, PoolStatus{Available: 10})
}

func TestPoolFileHoldsNoPlaintextKey(t *testing.T) {
	p := newPool(t, 20)
	var secrets [][]byte
	for i := range 5 {
		_, key := reserve(t, p, testChip(i))
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, der, scalar(t, key))
	}
	if err := p.Consume(testChip(0)); err != nil {
		t.Fatal(err)
	}
	poolKey, err := readKeyFile(p.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, poolKey, []byte(hex.EncodeToString(poolKey)))
	p.Close()
	raw, err := os.ReadFile(p.Path())
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range secrets {
		if bytes.Contains(raw, s) {
			t.Errorf("secret %d (%d bytes) is in the pool file in the clear", i, len(s))
		}
	}
}

// tamper changes the pool file at path directly, with the pool closed.
func tamper(t *testing.T, path string, change func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(change); err != nil {
		t.Fatal(err)
	}
}

func TestChangedAvailableRecordDoesNotDecrypt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(v []byte)
	}{
		{"nonce", func(v []byte) { v[0] ^= 1 }},
		{"ciphertext", func(v []byte) { v[poolNonceLen+20] ^= 0x80 }},
		{"tag", func(v []byte) { v[len(v)-1] ^= 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, 2)
			p.Close()
			tamper(t, p.Path(), func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketAvailable)
				v := bytes.Clone(b.Get(keyIDBytes(1)))
				tc.change(v)
				return b.Put(keyIDBytes(1), v)
			})
			p = openPool(t, p.Path())
			_, _, err := p.Reserve(testChip(1))
			if !errors.Is(err, ErrCorruptRecord) || !strings.Contains(err.Error(), "available key 1") || !strings.Contains(err.Error(), "does not decrypt") {
				t.Errorf("Reserve of a changed record: %v, want ErrCorruptRecord naming available key 1", err)
			}
			wantStatus(t, p, PoolStatus{Available: 2}) // nothing was reserved
		})
	}
}

func TestAvailableRecordMovedToAnotherKeyIDDoesNotDecrypt(t *testing.T) {
	p := newPool(t, 2)
	p.Close()
	tamper(t, p.Path(), func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAvailable)
		return b.Put(keyIDBytes(1), bytes.Clone(b.Get(keyIDBytes(2))))
	})
	p = openPool(t, p.Path())
	if _, _, err := p.Reserve(testChip(1)); !errors.Is(err, ErrCorruptRecord) || !strings.Contains(err.Error(), "available key 1") {
		t.Errorf("Reserve of a moved record: %v, want ErrCorruptRecord", err)
	}
}

func TestReservedRecordMovedToAnotherChipDoesNotDecrypt(t *testing.T) {
	p := newPool(t, 3)
	a, b := testChip(1), testChip(2)
	reserve(t, p, a)
	p.Close()
	tamper(t, p.Path(), func(tx *bolt.Tx) error {
		r := tx.Bucket(bucketReserved)
		if err := r.Put(b, bytes.Clone(r.Get(a))); err != nil {
			return err
		}
		return r.Delete(a)
	})
	p = openPool(t, p.Path())
	_, _, err := p.Reserve(b)
	if !errors.Is(err, ErrCorruptRecord) || !strings.Contains(err.Error(), "reserved for chip "+b.String()) {
		t.Errorf("Reserve(b) with chip a's reservation moved to b: %v, want ErrCorruptRecord", err)
	}
}

func TestReservationWithAnotherKeyIDDoesNotDecrypt(t *testing.T) {
	p := newPool(t, 3)
	a := testChip(1)
	reserve(t, p, a)
	p.Close()
	tamper(t, p.Path(), func(tx *bolt.Tx) error {
		r := tx.Bucket(bucketReserved)
		v := bytes.Clone(r.Get(a))
		binary.BigEndian.PutUint64(v, 2)
		return r.Put(a, v)
	})
	p = openPool(t, p.Path())
	if _, _, err := p.Reserve(a); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("Reserve(a) with a changed key ID: %v, want ErrCorruptRecord", err)
	}
}

func TestRecordCopiedFromAnotherPoolWithTheSameKeyDoesNotDecrypt(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "shared.key")
	var paths []string
	for _, name := range []string{"one.db", "two.db"} {
		path := filepath.Join(dir, name)
		p, err := OpenPool(path, PoolOptions{Create: true, KeyFile: keyFile})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Fill(1, nil); err != nil {
			t.Fatal(err)
		}
		p.Close()
		paths = append(paths, path)
	}
	var record []byte
	src, err := bolt.Open(paths[0], 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	src.View(func(tx *bolt.Tx) error {
		record = bytes.Clone(tx.Bucket(bucketAvailable).Get(keyIDBytes(1)))
		return nil
	})
	src.Close()
	tamper(t, paths[1], func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAvailable).Put(keyIDBytes(1), record)
	})
	p, err := OpenPool(paths[1], PoolOptions{KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, _, err := p.Reserve(testChip(1)); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("Reserve of a record from another pool: %v, want ErrCorruptRecord", err)
	}
}

func TestPoolKeyFileIsCreatedWithMode0600(t *testing.T) {
	p := newPool(t, 0)
	if want := p.Path() + ".key"; p.KeyFile() != want {
		t.Errorf("key file %s, want %s", p.KeyFile(), want)
	}
	key, err := readKeyFile(p.KeyFile()) // also refuses group or other access
	if err != nil {
		t.Fatal(err)
	}
	if id := poolKeyID(key); p.PoolKeyID() != hex.EncodeToString(id[:]) {
		t.Errorf("PoolKeyID %s is not the ID of the key file", p.PoolKeyID())
	}
	if fi, err := os.Stat(p.KeyFile()); err != nil || (fi.Mode().Perm() != 0o600 && !isWindows()) {
		t.Errorf("pool key file: %v, mode %04o; want 0600", err, fi.Mode().Perm())
	}
	if fi, err := os.Stat(p.Path()); err != nil || (fi.Mode().Perm() != 0o600 && !isWindows()) {
		t.Errorf("pool file: %v, mode %04o; want 0600", err, fi.Mode().Perm())
	}
}

func isWindows() bool { return filepath.Separator == '\\' }

func TestOpenPoolRefusesAnExposedPoolKey(t *testing.T) {
	skipOnWindows(t)
	p := newPool(t, 1)
	p.Close()
	if err := os.Chmod(p.KeyFile(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPool(p.Path(), PoolOptions{}); !errors.Is(err, ErrInsecureKeyFile) {
		t.Errorf("OpenPool with a 0644 key file: %v, want ErrInsecureKeyFile", err)
	}
}

func TestOpenPoolRefusesAnotherPoolsKey(t *testing.T) {
	p1, p2 := newPool(t, 1), newPool(t, 1)
	p1.Close()
	p2.Close()
	_, err := OpenPool(p1.Path(), PoolOptions{KeyFile: p2.KeyFile()})
	if !errors.Is(err, ErrWrongPoolKey) {
		t.Errorf("OpenPool with another pool's key: %v, want ErrWrongPoolKey", err)
	}
}

func TestOpenPoolNeverCreatesAKeyForAnExistingPool(t *testing.T) {
	p := newPool(t, 1)
	p.Close()
	other := filepath.Join(t.TempDir(), "other.key")
	_, err := OpenPool(p.Path(), PoolOptions{Create: true, KeyFile: other})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("OpenPool with a missing key file: %v, want an error naming it", err)
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("OpenPool created a new key for an existing pool")
	}
}

func TestOpenPoolOfAMissingPoolSaysHowToCreateIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.db")
	_, err := OpenPool(path, PoolOptions{})
	if !errors.Is(err, ErrNoPool) || !strings.Contains(err.Error(), "chipledger pool fill") {
		t.Errorf("OpenPool of a missing pool: %v, want ErrNoPool telling how to create one", err)
	}
	for _, f := range []string{path, path + ".key"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("OpenPool without Create made %s", f)
		}
	}
}

func TestOpenPoolRefusesAnotherBboltDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	tamper(t, path, func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("leaves"))
		return err
	})
	_, err := OpenPool(path, PoolOptions{Create: true})
	if err == nil || !strings.Contains(err.Error(), "not a chipledger key pool") {
		t.Errorf("OpenPool of another database: %v, want a refusal", err)
	}
	if _, err := os.Stat(path + ".key"); err == nil {
		t.Error("OpenPool made a pool key for a database it refused")
	}
}

func TestSecondOpenerGetsErrPoolInUse(t *testing.T) {
	p := newPool(t, 1)
	start := time.Now()
	_, err := OpenPool(p.Path(), PoolOptions{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrPoolInUse) {
		t.Fatalf("second OpenPool: %v, want ErrPoolInUse", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("second OpenPool took %s", waited)
	}
	p.Close()
	p = openPool(t, p.Path())
	wantStatus(t, p, PoolStatus{Available: 1})
}

func TestReadOnlyPoolNeedsNoKeyAndRefusesChanges(t *testing.T) {
	p := newPool(t, 3)
	reserve(t, p, testChip(1))
	p.Close()
	if err := os.Rename(p.KeyFile(), p.KeyFile()+".offline"); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenPool(p.Path(), PoolOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	wantStatus(t, ro, PoolStatus{Available: 2, Reserved: 1})
	if _, ok, err := ro.Reservation(testChip(1)); err != nil || !ok {
		t.Errorf("read-only Reservation: %v, %v", ok, err)
	}
	if _, _, err := ro.Reserve(testChip(2)); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Reserve: %v, want ErrReadOnly", err)
	}
	if err := ro.Consume(testChip(1)); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Consume: %v, want ErrReadOnly", err)
	}
	if err := ro.Fill(1, nil); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Fill: %v, want ErrReadOnly", err)
	}
	if _, err := OpenPool(p.Path(), PoolOptions{ReadOnly: true, Create: true}); err == nil {
		t.Error("OpenPool accepted ReadOnly with Create")
	}
}

// TestParseAuditRecordRejectsImpossibleRecords: a pool audit record the
// pool cannot have written is corrupt, not a record: a chip ID of 0 bytes
// (chip IDs are 8 to 32 bytes), a destroyed record without a reason or
// with a reason that is not UTF-8 (Destroy requires 1 to MaxDestroyReason
// bytes of UTF-8), a consumed record with a reason (Consume writes none).
func TestParseAuditRecordRejectsImpossibleRecords(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	chip := ledger.ChipID(bytes.Repeat([]byte{1}, 16))
	for name, r := range map[string]AuditRecord{
		"empty chip ID":        {Outcome: OutcomeConsumed, Chip: ledger.ChipID{}, KeyID: 1, ReservedAt: now, At: now},
		"destroyed, no reason": {Outcome: OutcomeDestroyed, Chip: chip, KeyID: 1, ReservedAt: now, At: now},
		"reason not UTF-8":     {Outcome: OutcomeDestroyed, Chip: chip, KeyID: 1, ReservedAt: now, At: now, Reason: "\xff\xfe"},
		"consumed with reason": {Outcome: OutcomeConsumed, Chip: chip, KeyID: 1, ReservedAt: now, At: now, Reason: "why?"},
	} {
		if got, err := parseAuditRecord(1, encodeAuditRecord(r)); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("%s: parseAuditRecord = %+v, %v; want ErrCorruptRecord", name, got, err)
		}
	}
}
