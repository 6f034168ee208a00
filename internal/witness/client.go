package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

const (
	// maxResponseSize bounds the body AddCheckpoint reads: room for many
	// signature lines, little for a hostile witness to waste.
	maxResponseSize = 64 << 10
	// maxErrorBody bounds StatusError.Body.
	maxErrorBody = 512
)

// ErrMalformedResponse reports an add-checkpoint response that breaks the
// protocol: a 200 body that is not signature lines, or a 409 size body that
// is not a decimal size and a newline.
var ErrMalformedResponse = errors.New("witness: malformed add-checkpoint response")

// A ConflictError reports that a request's old size was not the witness's
// latest cosigned size for the log, which is Size: a 409 Conflict response
// of type text/x.tlog.size. The submitter retries with old size Size and a
// consistency proof from it, if Size is not beyond the checkpoint's size.
type ConflictError struct {
	Size uint64
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("conflict: the witness's latest cosigned size is %d", e.Size)
}

// A StatusError reports an add-checkpoint response with a status other than
// 200 that is not a size conflict. Body is the start of the response body,
// trimmed of surrounding space, at most 512 bytes.
type StatusError struct {
	Code int
	Body string
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Code, http.StatusText(e.Code), e.Body)
}

// AddCheckpoint POSTs one add-checkpoint request to url (the witness's
// .../add-checkpoint URL) and returns the response's signature lines, each
// "— <name> <base64>\n", for the caller to append to the checkpoint and
// check with note.Open and the witness's cosignature verifier. hc nil means
// http.DefaultClient.
//
// A 409 of type text/x.tlog.size returns an error wrapping *ConflictError
// with the witness's latest size (use errors.As); any other status other
// than 200 returns an error wrapping *StatusError. A request MarshalRequest
// refuses wraps ErrMalformedRequest, and a response that breaks the
// protocol wraps ErrMalformedResponse.
func AddCheckpoint(ctx context.Context, hc *http.Client, url string, oldSize uint64, proof [][32]byte, checkpoint []byte) ([]byte, error) {
	body, err := MarshalRequest(Request{OldSize: oldSize, Proof: proof, Checkpoint: checkpoint})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("witness: add-checkpoint to %s: %w", url, err)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("witness: add-checkpoint to %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("witness: add-checkpoint to %s: reading HTTP %d response: %w", url, resp.StatusCode, err)
	}
	if err := checkResponse(resp.StatusCode, resp.Header.Get("Content-Type"), b); err != nil {
		return nil, fmt.Errorf("witness: add-checkpoint to %s (old size %d): %w", url, oldSize, err)
	}
	return b, nil
}

// checkResponse returns nil if an add-checkpoint response with status code,
// media type contentType and body b carries signature lines, and otherwise
// the error AddCheckpoint returns for it.
func checkResponse(code int, contentType string, b []byte) error {
	if len(b) > maxResponseSize && code == http.StatusOK {
		return fmt.Errorf("%w: body is larger than %d bytes", ErrMalformedResponse, maxResponseSize)
	}
	switch mt, _, _ := mime.ParseMediaType(contentType); {
	case code == http.StatusOK:
		return checkSignatureLines(b)
	case code == http.StatusConflict && mt == sizeContentType:
		size, ok := bytes.CutSuffix(b, []byte("\n"))
		n, err := parseDecimal(size)
		if !ok || err != nil {
			return fmt.Errorf("%w: 409 size body %.40q is not a decimal size and a newline", ErrMalformedResponse, b)
		}
		return &ConflictError{Size: n}
	}
	return &StatusError{Code: code, Body: errorBody(b)}
}

// checkSignatureLines checks that b is one or more lines, each starting
// with "— " (U+2014 and a space), so that appending it to a signed note
// can only add signatures: a blank line or other text would move where
// note.Open finds the signature block.
func checkSignatureLines(b []byte) error {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return fmt.Errorf("%w: 200 body is empty or does not end in a newline", ErrMalformedResponse)
	}
	for i, line := range strings.SplitAfter(string(b[:len(b)-1]), "\n") {
		if !strings.HasPrefix(line, "— ") {
			return fmt.Errorf("%w: 200 body line %d %.60q is not a signature line", ErrMalformedResponse, i+1, line)
		}
	}
	return nil
}

// errorBody returns b trimmed and cut to at most maxErrorBody bytes of
// valid UTF-8.
func errorBody(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > maxErrorBody {
		s = s[:maxErrorBody]
	}
	return strings.ToValidUTF8(s, "")
}
