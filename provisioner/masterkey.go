package provisioner

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// A master key directory holds one file per master key version, named
// master-<version>.key with the version in decimal without leading zeros
// (master-1.key, master-2.key, ...). Each file is a key file: the 32-byte key
// as 64 lower-case hexadecimal digits and a newline, with mode 0600. Files
// are created atomically and never overwritten, and a version is never
// reused: the station records master_key_version in every data package
// (DESIGN.md §3.4), so the manufacturer backend must keep every version it
// ever issued to re-derive the channel key of any device (§3.3).
//
// Other files in the directory are ignored, except names that look like a
// master key file but are not one exactly (master-01.key, master-0.key,
// master-x.key), which are errors: they are almost always a mistake made
// while restoring a backup.
const (
	masterKeyPrefix = "master-"
	masterKeySuffix = ".key"
)

// KeyFileLen is the length in bytes of the keys held in key files: master
// keys and pool keys.
const KeyFileLen = 32

var (
	// ErrNoMasterKey is returned by LoadMasterKeys when the directory holds
	// no master key (or does not exist).
	ErrNoMasterKey = errors.New("no master key")
	// ErrUnknownMasterKeyVersion is returned by MasterKeys.Key for a
	// version the directory does not hold.
	ErrUnknownMasterKeyVersion = errors.New("unknown master key version")
	// ErrInsecureKeyFile is returned when a key file (a master key or a
	// pool key) can be read or written by users other than its owner.
	ErrInsecureKeyFile = errors.New("key file is accessible by other users")
)

// MasterKeys are the versions of the master key that channel keys are
// derived from (DESIGN.md §3.3), as loaded from a master key directory. The
// current version is the highest; a station derives new channel keys with
// it, and the manufacturer backend looks up older versions with Key.
//
// A MasterKeys never prints its key bytes: every fmt verb and slog show only
// the directory and the versions. It is safe for concurrent use.
type MasterKeys struct {
	dir      string
	versions []uint32 // ascending
	keys     map[uint32][]byte
}

// NewMasterKey creates the next version of the master key in dir (created
// with mode 0700 if missing): 32 bytes from crypto/rand in
// master-<version>.key, mode 0600, where version is the highest version in
// dir plus one, or 1 for an empty directory. The existing files are checked
// as LoadMasterKeys checks them first, so a directory with a damaged or
// exposed key gets no new version until it is fixed. The file is written
// atomically and never replaces an existing one; when several processes
// create keys at once, each gets its own version.
func NewMasterKey(dir string) (version uint32, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("create master key directory: %w", err)
	}
	// Another process may take the version this one chose between the
	// scan and the write; the write then fails without replacing anything
	// and the scan is repeated.
	const attempts = 10
	for range attempts {
		mk, err := scanMasterKeys(dir)
		if err != nil {
			return 0, err
		}
		var highest uint32
		if n := len(mk.versions); n > 0 {
			highest = mk.versions[n-1]
		}
		if highest == math.MaxUint32 {
			return 0, fmt.Errorf("%s already holds master key version %d, the last one possible", dir, highest)
		}
		version = highest + 1
		err = writeNewMasterKey(dir, version)
		if err == nil {
			return version, nil
		}
		if _, statErr := os.Lstat(MasterKeyPath(dir, version)); statErr != nil {
			return 0, err // the write failed for another reason than a concurrent creator
		}
	}
	return 0, fmt.Errorf("create master key in %s: gave up after %d attempts, other processes kept taking the next version", dir, attempts)
}

// writeNewMasterKey writes a new random key as the given version; it fails
// if that version's file exists.
func writeNewMasterKey(dir string, version uint32) error {
	key := make([]byte, KeyFileLen)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	defer clear(key)
	return createKeyFile(MasterKeyPath(dir, version), key)
}

// MasterKeyPath returns the path of the file of a master key version in
// dir: dir/master-<version>.key.
func MasterKeyPath(dir string, version uint32) string {
	return filepath.Join(dir, masterKeyPrefix+strconv.FormatUint(uint64(version), 10)+masterKeySuffix)
}

// LoadMasterKeys reads every master key version in dir. It fails if dir
// holds no master key (ErrNoMasterKey), if a key file is accessible by other
// users (ErrInsecureKeyFile), is not a valid key file or is misnamed, or if
// two versions hold the same key (a copied file, which would make the
// version in data packages meaningless).
func LoadMasterKeys(dir string) (*MasterKeys, error) {
	mk, err := scanMasterKeys(dir)
	if err != nil {
		return nil, err
	}
	if len(mk.versions) == 0 {
		return nil, fmt.Errorf("%w in %s; create one with chipledger master-key new --dir %s", ErrNoMasterKey, dir, dir)
	}
	return mk, nil
}

// scanMasterKeys reads and checks every master key file in dir; a missing
// or empty directory gives a MasterKeys without versions.
func scanMasterKeys(dir string) (*MasterKeys, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read master key directory: %w", err)
	}
	mk := &MasterKeys{dir: dir, keys: make(map[uint32][]byte)}
	for _, e := range entries {
		version, ok, err := parseMasterKeyName(e.Name())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e.Name()), err)
		}
		if !ok {
			continue
		}
		key, err := readKeyFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		for v, other := range mk.keys {
			if subtle.ConstantTimeCompare(key, other) == 1 {
				return nil, fmt.Errorf("%s holds the same key as %s: every version must be a new random key (was a file copied?)",
					MasterKeyPath(dir, version), MasterKeyPath(dir, v))
			}
		}
		mk.keys[version] = key
		mk.versions = append(mk.versions, version)
	}
	slices.Sort(mk.versions)
	return mk, nil
}

// parseMasterKeyName returns the version of a master key file name. ok is
// false for names that are not meant as one (they do not start with
// "master-" and end in ".key"); err is set for names that are, but whose
// version is not a canonical decimal from 1 to 2^32-1.
func parseMasterKeyName(name string) (version uint32, ok bool, err error) {
	digits, found := strings.CutPrefix(name, masterKeyPrefix)
	if !found {
		return 0, false, nil
	}
	digits, found = strings.CutSuffix(digits, masterKeySuffix)
	if !found {
		return 0, false, nil
	}
	v, perr := strconv.ParseUint(digits, 10, 32)
	if perr != nil || v == 0 || strconv.FormatUint(v, 10) != digits {
		return 0, false, fmt.Errorf("not a master key file name: want master-<version>.key with a decimal version from 1 to %d and no leading zeros", uint32(math.MaxUint32))
	}
	return uint32(v), true, nil
}

// Current returns the highest version and its key, the one new channel
// keys are derived with. The key is a copy.
func (m *MasterKeys) Current() (version uint32, key []byte) {
	version = m.versions[len(m.versions)-1]
	return version, bytes.Clone(m.keys[version])
}

// Key returns a copy of the key of the given version, or an error wrapping
// ErrUnknownMasterKeyVersion.
func (m *MasterKeys) Key(version uint32) ([]byte, error) {
	key, ok := m.keys[version]
	if !ok {
		return nil, fmt.Errorf("%w %d: %s holds versions %s", ErrUnknownMasterKeyVersion, version, m.dir, m.versionList())
	}
	return bytes.Clone(key), nil
}

// Versions returns the versions held, in ascending order.
func (m *MasterKeys) Versions() []uint32 { return slices.Clone(m.versions) }

// Dir returns the directory the keys were loaded from.
func (m *MasterKeys) Dir() string { return m.dir }

func (m MasterKeys) versionList() string {
	s := make([]string, len(m.versions))
	for i, v := range m.versions {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, ", ")
}

// String describes m without its keys: the directory and the versions.
func (m MasterKeys) String() string {
	return fmt.Sprintf("master keys in %s (versions %s)", m.dir, m.versionList())
}

// Format prints String for every verb, so that no verb (%d and %x on the
// struct included) prints key bytes. String, Format and LogValue have value
// receivers so that a copied MasterKeys is covered too.
func (m MasterKeys) Format(f fmt.State, _ rune) { io.WriteString(f, m.String()) }

// LogValue logs the directory and the current version only.
func (m MasterKeys) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("dir", m.dir)}
	if n := len(m.versions); n > 0 {
		attrs = append(attrs, slog.Uint64("current_version", uint64(m.versions[n-1])))
	}
	return slog.GroupValue(attrs...)
}

// Key files hold the 32-byte secret keys this package keeps in files,
// master keys and pool keys: 64 hexadecimal digits and a newline, mode 0600.
// Hexadecimal lets an operator check a key against a paper or HSM backup.

// createKeyFile writes key to a new key file at path with mode 0600,
// atomically, failing if path exists.
func createKeyFile(path string, key []byte) error {
	data := make([]byte, hex.EncodedLen(len(key))+1)
	hex.Encode(data, key)
	data[len(data)-1] = '\n'
	defer clear(data)
	return writeFileExclusive(path, data, 0o600)
}

// readKeyFile reads a key file, refusing one that is not a regular file
// (after following symbolic links) or that users other than its owner can
// access.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrInsecureKeyFile, path, fi.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(2*hex.EncodedLen(KeyFileLen))))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer clear(data)
	text, _ := bytes.CutSuffix(data, []byte("\n"))
	key := make([]byte, KeyFileLen)
	if len(text) != hex.EncodedLen(KeyFileLen) {
		return nil, fmt.Errorf("%s is not a key file: want %d hexadecimal digits and a newline", path, hex.EncodedLen(KeyFileLen))
	}
	if _, err := hex.Decode(key, text); err != nil {
		return nil, fmt.Errorf("%s is not a key file: want %d hexadecimal digits and a newline", path, hex.EncodedLen(KeyFileLen))
	}
	return key, nil
}
