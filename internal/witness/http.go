package witness

import (
	"errors"
	"io"
	"net/http"
	"strconv"
)

// sizeContentType is the media type of a 409 response that carries the
// witness's latest cosigned size (c2sp.org/tlog-witness).
const sizeContentType = "text/x.tlog.size"

// Handler returns the witness's HTTP handler. It serves POST /add-checkpoint
// (c2sp.org/tlog-witness); mount it under a prefix with http.StripPrefix.
// The responses are:
//
//   - 200 with the cosignature line(s) when the checkpoint is cosigned (and
//     stored);
//   - 400 for a malformed body or checkpoint, or an old size beyond the
//     checkpoint's size;
//   - 403 when no log key's signature verifies;
//   - 404 for an origin the witness does not follow;
//   - 405 for a method other than POST;
//   - 409 with Content-Type text/x.tlog.size and body "<size>\n" when the
//     old size is not the latest cosigned size;
//   - 409 (text/plain) for a checkpoint of the latest cosigned size with
//     another root hash, a sign the log forked;
//   - 413 for a body over MaxRequestSize bytes;
//   - 422 when the consistency proof does not verify;
//   - 500 when the state cannot be stored.
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/add-checkpoint", w.serveAddCheckpoint)
	return mux
}

func (w *Witness) serveAddCheckpoint(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "add-checkpoint takes POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxRequestSize))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(rw, "request body is larger than "+strconv.Itoa(MaxRequestSize)+" bytes", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ParseRequest(body)
	if err != nil {
		w.refuse(rw, r, req, err)
		return
	}
	sigs, err := w.add(req)
	if err != nil {
		w.refuse(rw, r, req, err)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Write(sigs)
}

// refuse answers a request the witness did not cosign and logs why. A
// checkpoint refused for a root conflict or a bad proof carried a valid
// log signature, so it is logged in full as possible evidence of a fork.
func (w *Witness) refuse(rw http.ResponseWriter, r *http.Request, req Request, err error) {
	code := statusFor(err)
	attrs := []any{"remote", r.RemoteAddr, "status", code, "err", err}
	switch {
	case code == http.StatusInternalServerError:
		w.log.Error("add-checkpoint failed", attrs...)
		http.Error(rw, "internal error", code)
		return
	case errors.Is(err, errRootConflict) || errors.Is(err, errInconsistent):
		w.log.Warn("refused a signed checkpoint that may show a fork", append(attrs, "old_size", req.OldSize, "checkpoint", string(req.Checkpoint))...)
	default:
		w.log.Debug("refused add-checkpoint", attrs...)
	}
	if c, ok := errors.AsType[*ConflictError](err); ok {
		rw.Header().Set("Content-Type", sizeContentType)
		rw.Header().Set("X-Content-Type-Options", "nosniff")
		rw.WriteHeader(http.StatusConflict)
		rw.Write(strconv.AppendUint(nil, c.Size, 10))
		rw.Write([]byte{'\n'})
		return
	}
	http.Error(rw, err.Error(), code)
}

// statusFor returns the HTTP status code that answers a request refused
// with err.
func statusFor(err error) int {
	switch {
	case errors.Is(err, ErrMalformedRequest), errors.Is(err, errOldTooLarge):
		return http.StatusBadRequest
	case errors.Is(err, errUnverified):
		return http.StatusForbidden
	case errors.Is(err, errUnknownLog):
		return http.StatusNotFound
	case errors.Is(err, errRootConflict):
		return http.StatusConflict
	case errors.Is(err, errInconsistent):
		return http.StatusUnprocessableEntity
	}
	if _, ok := errors.AsType[*ConflictError](err); ok {
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}
