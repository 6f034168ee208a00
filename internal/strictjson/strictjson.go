package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Decode decodes data, which must hold exactly one JSON value, into v (a
// pointer). Besides what json.Unmarshal checks, it refuses members that v's
// type does not declare (compared case-sensitively, unless the type holds
// a map, a json.RawMessage or an interface, whose contents are free),
// members repeated in one object (also when they differ only in case,
// unless the type's names are free), and data after the value.
func Decode(data []byte, v any) error {
	names, free := memberNames(reflect.TypeOf(v))
	if err := checkMembers(data, names, free); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// checkMembers walks the tokens of data and checks each object's member
// names.
func checkMembers(data []byte, names map[string]bool, free bool) error {
	type object struct {
		seen      map[string]bool // lower-cased names
		expectKey bool
	}
	var stack []*object // nil entries are arrays
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, &object{seen: map[string]bool{}, expectKey: true})
			case '[':
				stack = append(stack, nil)
			default: // '}' or ']': the value ends; its parent object expects a key
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1] != nil {
					stack[len(stack)-1].expectKey = true
				}
			}
			continue
		}
		if top == nil {
			continue // an array element or the top-level value
		}
		if !top.expectKey {
			top.expectKey = true // a member's scalar value
			continue
		}
		key := tok.(string)
		fold := key
		if !free {
			// Only declared names, which encoding/json matches in any
			// case: two spellings of one would both land in its field.
			// (A map's keys are compared as they are.)
			fold = strings.ToLower(key)
		}
		if top.seen[fold] {
			return fmt.Errorf("member %q appears twice in an object", key)
		}
		top.seen[fold] = true
		if !free && !names[key] {
			return fmt.Errorf("unknown member %q (names are case-sensitive)", key)
		}
		top.expectKey = false
	}
}

var (
	unmarshaler     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// memberNames returns the JSON member names of t's structs, at any depth,
// and whether t holds a map (whose keys are not names).
func memberNames(t reflect.Type) (names map[string]bool, free bool) {
	names = map[string]bool{}
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for {
			if t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler) {
				// Its JSON is its own business: a text form (time.Time)
				// has no members, anything else (json.RawMessage) any.
				if !t.Implements(textUnmarshaler) && !reflect.PointerTo(t).Implements(textUnmarshaler) {
					free = true
				}
				return
			}
			if t.Kind() != reflect.Pointer && t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				break
			}
			t = t.Elem()
		}
		if seen[t] {
			return
		}
		seen[t] = true
		switch t.Kind() {
		case reflect.Map:
			free = true
		case reflect.Interface:
			free = true // anything may be decoded into it
		case reflect.Struct:
			for f := range t.Fields() {
				if !f.IsExported() && !f.Anonymous {
					continue
				}
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				embedded := f.Type
				if embedded.Kind() == reflect.Pointer {
					embedded = embedded.Elem()
				}
				if f.Anonymous && name == "" && embedded.Kind() == reflect.Struct {
					walk(f.Type) // promoted fields
					continue
				}
				if name == "" {
					name = f.Name
				}
				names[name] = true
				walk(f.Type)
			}
		}
	}
	walk(t)
	return names, free
}
