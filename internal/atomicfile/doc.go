// Package atomicfile writes small files (keys, certificates, state) so that
// a crash leaves either the old content or the new, never a part of it: the
// data goes to a synced temporary file in the same directory, which then
// takes the file's name, and the directory is synced so the name is
// durable too.
package atomicfile
