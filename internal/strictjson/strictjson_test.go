package strictjson

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Package []byte `json:"package"`
	Note    string `json:"note,omitempty"`
}

type outer struct {
	Format  string    `json:"format"`
	Keys    *inner    `json:"keys,omitempty"`
	List    []inner   `json:"list"`
	Updated time.Time `json:"updated"`
	Plain   int
	Skipped string `json:"-"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		wantErr    string // "" for valid
	}{
		{"valid", `{"format":"v1","keys":{"package":"AQI="},"list":[{"package":"","note":"x"}],"updated":"2026-01-01T00:00:00Z","Plain":3}`, ""},
		{"null member", `{"format":"v1","keys":null}`, ""},
		{"member twice", `{"format":"v1","format":"v2"}`, `"format" appears twice`},
		{"member twice in a nested object", `{"keys":{"package":"AQI=","package":null}}`, `"package" appears twice`},
		{"member twice in an array's object", `{"list":[{"note":"a"},{"note":"b","note":"c"}]}`, `"note" appears twice`},
		{"member twice after a nested value", `{"keys":{"package":"AQI="},"list":[],"keys":null}`, `"keys" appears twice`},
		{"members differing in case", `{"format":"v1","FORMAT":"v2"}`, `"FORMAT" appears twice`},
		{"member in another case", `{"FORMAT":"v1"}`, `unknown member "FORMAT"`},
		{"field name in another case", `{"plain":1}`, `unknown member "plain"`},
		{"unknown member", `{"surprise":1}`, `unknown`},
		{"skipped field", `{"Skipped":"x"}`, `unknown`},
		{"data after the value", `{"format":"v1"} {}`, "data after"},
		{"not JSON", `{"format":`, "EOF"},
	} {
		var v outer
		err := Decode([]byte(tc.json), &v)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.wantErr)
		}
	}
}

func TestDecodeLeavesMapKeysFree(t *testing.T) {
	var v struct {
		Counts map[string]int `json:"counts"`
	}
	if err := Decode([]byte(`{"counts":{"Any":1,"any2":2}}`), &v); err != nil || v.Counts["Any"] != 1 {
		t.Fatalf("%v %v", v, err)
	}
	if err := Decode([]byte(`{"counts":{"a":1,"a":2}}`), &v); err == nil {
		t.Fatal("a map key given twice was accepted")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"format":"v1","keys":{"package":"AQI="},"list":[{"note":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v outer
		if Decode(data, &v) != nil {
			return
		}
		// What Decode accepts, encoding/json reads the same way.
		var w outer
		if err := Decode(data, &w); err != nil {
			t.Fatalf("second decode: %v", err)
		}
	})
}

type withRaw struct {
	Kind  string          `json:"kind"`
	Extra json.RawMessage `json:"extra"`
}

type withMap struct {
	Labels map[string]int `json:"labels"`
}

type Name string

type withEmbeddedNonStruct struct {
	Name
	X int `json:"x"`
}

// TestDecodeReadsWhatEncodingJSONWrites: types whose JSON holds members
// Decode cannot check by name (a raw message, a map whose keys differ only
// in case) or that embed a non-struct type decode as encoding/json wrote
// them.
func TestDecodeReadsWhatEncodingJSONWrites(t *testing.T) {
	for name, tc := range map[string]struct {
		v    any
		data any
	}{
		"raw message holding an object": {new(withRaw), withRaw{Kind: "k", Extra: json.RawMessage(`{"anything":1}`)}},
		"map keys differing in case":    {new(withMap), withMap{Labels: map[string]int{"Key": 1, "key": 2}}},
		"embedded non-struct type":      {new(withEmbeddedNonStruct), withEmbeddedNonStruct{Name: "n", X: 1}},
	} {
		b, err := json.Marshal(tc.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, tc.v); err != nil {
			t.Fatalf("%s: encoding/json refuses its own output: %v", name, err)
		}
		if err := Decode(b, tc.v); err != nil {
			t.Errorf("%s: Decode(%s) = %v; encoding/json wrote it", name, b, err)
		}
	}
	// Still strict about the names it can check.
	if err := Decode([]byte(`{"Name":"n","x":1,"X":2}`), new(withEmbeddedNonStruct)); err == nil {
		t.Error(`Decode accepted "x" and "X" in one object`)
	}
}
