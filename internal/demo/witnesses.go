package demo

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/internal/witness"
	"github.com/chipledger/chipledger/proofs"
)

// demoWitnessInterval is how often the demo's leader has its checkpoint
// cosigned: shorter than a node's default, so that the recovery, which
// waits for a witnessed checkpoint covering its lookup, waits little.
const demoWitnessInterval = 100 * time.Millisecond

// witnesses are tlog-witnesses (internal/witness) served on loopback, each
// with its own key and state directory, and the c2sp.org/tlog-policy that
// names them, as the nodes and the recovery client share it. In a
// deployment each runs on a machine the ledger's operator does not control
// (`chipledger witness`); here they stand in for them.
type witnesses struct {
	URLs   []string
	Quorum int
	Policy *proofs.WitnessPolicy
	// PolicyText is the policy file's text.
	PolicyText []byte

	servers   []*http.Server
	witnesses []*witness.Witness
}

// startWitnesses starts n witnesses of the log whose verifier key is
// logVKey, keeping their state under dir, and a policy needing quorum of
// them. Close stops them.
func startWitnesses(dir, logVKey string, n, quorum int, logger *slog.Logger) (ws *witnesses, err error) {
	ws = &witnesses{Quorum: quorum}
	defer func() {
		if err != nil {
			ws.Close()
		}
	}()
	var policy strings.Builder
	var names []string
	for i := range n {
		name := fmt.Sprintf("w%d", i+1)
		url, vkey, err := ws.start(filepath.Join(dir, name), "demo.chipledger.local/"+name, logVKey, logger.With("witness", name))
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", name, err)
		}
		ws.URLs = append(ws.URLs, url)
		names = append(names, name)
		fmt.Fprintf(&policy, "witness %s %s %s\n", name, vkey, url)
	}
	fmt.Fprintf(&policy, "group demo %d %s\nquorum demo\n", quorum, strings.Join(names, " "))
	ws.PolicyText = []byte(policy.String())
	if ws.Policy, err = proofs.ParseWitnessPolicy(ws.PolicyText); err != nil {
		return nil, err
	}
	return ws, nil
}

// start runs one witness, named keyName, and returns its submission URL
// and its cosignature/v1 verifier key.
func (ws *witnesses) start(stateDir, keyName, logVKey string, logger *slog.Logger) (url, vkey string, err error) {
	skey, nvkey, err := note.GenerateKey(rand.Reader, keyName)
	if err != nil {
		return "", "", err
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return "", "", err
	}
	if vkey, err = fnote.VKeyToCosignatureV1(nvkey); err != nil {
		return "", "", err
	}
	w, err := witness.New(witness.Config{Signer: signer, Logs: []string{logVKey}, StateDir: stateDir, Logger: logger})
	if err != nil {
		return "", "", err
	}
	ws.witnesses = append(ws.witnesses, w)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	ws.servers = append(ws.servers, srv)
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), vkey, nil
}

// Close stops the witnesses.
func (ws *witnesses) Close() error {
	var errs []error
	for _, s := range ws.servers {
		errs = append(errs, s.Close())
	}
	for _, w := range ws.witnesses {
		errs = append(errs, w.Close())
	}
	return errors.Join(errs...)
}
