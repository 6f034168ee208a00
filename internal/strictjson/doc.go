// Package strictjson decodes the JSON files the project writes for itself
// (a device's state, a station's journal records) strictly: one value and
// nothing after it, no member the type does not declare, no member twice,
// and member names exactly as declared. encoding/json alone lets a repeated
// member silently override the first and matches names without regard to
// case, so a file could say two things and be read as one of them.
package strictjson
