package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/hostport"
	"github.com/chipledger/chipledger/internal/witness"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

const defaultWitnessAddr = "127.0.0.1:8090"

// witnessCommand is `chipledger witness`: run a witness.
func witnessCommand() *cli.Command {
	return &cli.Command{
		Name:  "witness",
		Usage: "run a witness: cosign a ledger's checkpoints that are consistent with all it cosigned before",
		UsageText: `chipledger witness --key FILE --log-key KEY [--log-key KEY ...] --state-dir DIR [--addr HOST:PORT] [--url URL]

   chipledger keys --origin witness.example.org/w1 --out w1.key
   chipledger witness --key w1.key --log-key ledger.pub --state-dir w1-state \
       --addr 0.0.0.0:8090 --url https://w1.example.org`,
		Description: `Runs a C2SP tlog-witness (c2sp.org/tlog-witness): ledger leaders POST their
checkpoints to /add-checkpoint with a consistency proof from the last one this
witness cosigned, and it cosigns (cosignature/v1, c2sp.org/tlog-cosignature)
only a checkpoint signed by a --log-key that extends that one. It stores what it
cosigned per log in --state-dir (fsynced before it answers) and never goes
back: a log that shows two histories cannot get both cosigned.

Run witnesses on machines the ledger's operator does not control. Its key is an
ordinary note key ("chipledger keys" makes one; its origin names the witness).
On start it prints the policy line that names it, for the c2sp.org/tlog-policy
file the nodes (--witness-policy) and the clients (recover --witness-policy)
share, e.g. with three witnesses of which two must cosign:

   witness w1 <vkey> https://w1.example.org
   witness w2 <vkey> https://w2.example.org
   witness w3 <vkey> https://w3.example.org
   group main 2 w1 w2 w3
   quorum main

It stops gracefully on SIGINT or SIGTERM.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Required: true, EnvVars: env("witness-key"), TakesFile: true,
				Usage: "the witness's secret key `FILE` (from \"chipledger keys\")"},
			&cli.StringSliceFlag{Name: "log-key", Required: true, EnvVars: env("witness-log-key"),
				Usage: "verifier `KEY` (or a file holding it) of a ledger to witness (repeatable)"},
			&cli.StringFlag{Name: "state-dir", Required: true, EnvVars: env("witness-state-dir"), TakesFile: true,
				Usage: "`DIR` of the witness's state: the latest checkpoint cosigned per ledger"},
			&cli.StringFlag{Name: "addr", Value: defaultWitnessAddr, EnvVars: env("witness-addr"),
				Usage: "`HOST:PORT` to serve /add-checkpoint on"},
			&cli.StringFlag{Name: "url", EnvVars: env("witness-url"),
				Usage: "the `URL` the ledger nodes reach this witness at, for the policy line it prints", DefaultText: "http:// and the address it listens on"},
		},
		Action: runWitness,
	}
}

func runWitness(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	addr := c.String("addr")
	if err := hostport.Check(addr, true); err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if u := c.String("url"); u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("--url %q: want an http:// or https:// URL", u)
	}
	skey, err := os.ReadFile(c.String("key"))
	if err != nil {
		return fmt.Errorf("--key: %w (make one with \"chipledger keys --origin NAME --out FILE\")", err)
	}
	signer, vkey, err := witnessSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return fmt.Errorf("--key %s: %w", c.String("key"), err)
	}
	var logs []string
	for _, v := range c.StringSlice("log-key") {
		k, err := parseVerifierKey(v, "a witness checks checkpoints with the log's verifier key")
		if err != nil {
			return err
		}
		logs = append(logs, k)
	}
	w, err := witness.New(witness.Config{Signer: signer, Logs: logs, StateDir: c.String("state-dir"), Logger: logger(c)})
	if err != nil {
		return err
	}
	defer w.Close()
	ln, err := listenAddr(addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/add-checkpoint", w.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	url := c.String("url")
	if url == "" {
		url = "http://" + ln.Addr().String()
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			fmt.Fprintf(c.App.ErrWriter, "The policy line below names %s, which the nodes cannot reach: put the witness's own URL there (or pass --url).\n", url)
		}
	}
	name := signer.Name()
	logger(c).Info("witness running", "url", url, "name", name, "logs", len(logs), "state_dir", c.String("state-dir"))
	fmt.Fprintf(c.App.Writer, "witness %s %s %s\n", policyName(name), vkey, url)

	return serveUntilInterrupted(c, srv, done, "witness")
}

// witnessSigner returns the cosignature/v1 signer of a note secret key and
// its verifier key, in the cosignature/v1 form a policy names.
func witnessSigner(skey string) (*fnote.Signer, string, error) {
	if !strings.HasPrefix(skey, "PRIVATE+KEY+") {
		return nil, "", errors.New("not a secret note key (PRIVATE+KEY+...); \"chipledger keys\" makes one")
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, "", err
	}
	// The secret key's verifier key, which the log key code derives.
	ls, err := ledger.NewLogSigner(skey)
	if err != nil {
		return nil, "", err
	}
	vkey, err := fnote.VKeyToCosignatureV1(ls.VerifierKey())
	if err != nil {
		return nil, "", err
	}
	return signer, vkey, nil
}

// policyKeywords are the words of a tlog-policy file that cannot name a
// witness.
var policyKeywords = map[string]bool{"witness": true, "group": true, "quorum": true, "log": true, "any": true, "all": true, "none": true}

// policyName makes a tlog-policy component name of a key name: the part
// after its last '/' or, if that is empty, the whole name. A keyword is no
// name: then the whole key name, or, if that is the keyword, "w-" and it.
func policyName(keyName string) string {
	name := keyName
	if i := strings.LastIndexByte(keyName, '/'); i >= 0 && i < len(keyName)-1 {
		name = keyName[i+1:]
	}
	switch {
	case !policyKeywords[name]:
		return name
	case name != keyName:
		return keyName
	default:
		return "w-" + keyName
	}
}

// readWitnessPolicy reads and parses a c2sp.org/tlog-policy file.
func readWitnessPolicy(path string) (*proofs.WitnessPolicy, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := proofs.ParseWitnessPolicy(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}
