package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestUsageErrorsAreOneLineWithExitStatus2(t *testing.T) {
	tests := []struct {
		args []string
		want []string // substrings of the one line
	}{
		{[]string{"--bogus"}, []string{"chipledger: ", "unknown flag --bogus", "`chipledger --help`"}},
		{[]string{"bogus"}, []string{"chipledger: ", `unknown command "bogus"`, "`chipledger --help`"}},
		{[]string{"keys", "--bogus"}, []string{"chipledger keys: ", "unknown flag --bogus", "`chipledger keys --help`"}},
		{[]string{"keys", "--orign", "x", "--out", "y"}, []string{"unknown flag --orign", "did you mean --origin?"}},
		{[]string{"keys"}, []string{"chipledger keys: ", "missing required flags --origin, --out", "`chipledger keys --help`"}},
		{[]string{"keys", "--origin", "x"}, []string{"missing required flag --out;"}},
		{[]string{"pool", "fill", "--pool", "p.db", "--count", "many"}, []string{"chipledger pool fill: ", "invalid value", "`chipledger pool fill --help`"}},
		{[]string{"pool", "stats"}, []string{"chipledger pool: ", `unknown command "stats"`, "did you mean status?"}},
		{[]string{"node", "verify"}, []string{"chipledger node verify: ", "missing required flag --data-dir (or $CHIPLEDGER_DATA_DIR)"}},
		{[]string{"audit", "--ledger", "127.0.0.1:1", "--log-key", "k", "--roots", "r"}, []string{"chipledger audit: ", "--state"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			clearEnv(t)
			clearKeyToolEnv(t)
			t.Setenv("CHIPLEDGER_AUDIT_STATE", "")
			os.Unsetenv("CHIPLEDGER_AUDIT_STATE")
			r := runCLI(t, tt.args...)
			var ue *usageError
			if !errors.As(r.err, &ue) || exitStatus(r.err) != 2 {
				t.Fatalf("error %v (exit %d), want a usage error with exit status 2", r.err, exitStatus(r.err))
			}
			if msg := r.err.Error(); strings.Contains(msg, "\n") {
				t.Errorf("the error has more than one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("error %q does not mention %q", r.err, w)
				}
			}
			if r.stdout != "" || r.stderr != "" {
				t.Errorf("printed more than the error:\nstdout %q\nstderr %q", r.stdout, r.stderr)
			}
		})
	}
}

func TestNodeMissingFlagsIsAUsageError(t *testing.T) {
	clearEnv(t)
	r := runCLI(t, "node")
	if exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), "--dev") {
		t.Errorf("node without flags: %v (exit %d), want the missing flags and --dev with exit status 2", r.err, exitStatus(r.err))
	}
}

func TestHelpStillWorksWithRequiredFlags(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{"help"}, {"pool", "help"}, {"pool"}, {"pool", "fill", "--help"}, {"keys", "--help"}} {
		r := runCLI(t, args...)
		if r.err != nil || r.stdout == "" {
			t.Errorf("chipledger %s: %v, stdout %q", strings.Join(args, " "), r.err, r.stdout)
		}
	}
	r := runCLI(t, "pool", "fill", "--help")
	found := false
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--count") {
			found = true
			if !strings.Contains(line, "(default: none, required)") {
				t.Errorf("the required --count does not say it has no default: %q", line)
			}
		}
	}
	if !found {
		t.Errorf("pool fill --help lists no --count:\n%s", r.stdout)
	}
}

func TestTheBinaryPrintsAUsageErrorAsOneLineOnStderr(t *testing.T) {
	bin := chipledgerBinary(t)
	cmd := exec.Command(bin, "keys", "--bogus")
	cmd.Env = []string{}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("chipledger keys --bogus: %v, want exit status 2", err)
	}
	want := "chipledger keys: unknown flag --bogus; see `chipledger keys --help`\n"
	if stdout.Len() != 0 || stderr.String() != want {
		t.Errorf("stdout %q, stderr %q; want nothing and %q", stdout.String(), stderr.String(), want)
	}
}

// Every flag's help shows its default once: a flag whose usage says its
// default itself must not get urfave/cli's "(default: 0)" as well.
func TestFlagHelpShowsEachDefaultOnce(t *testing.T) {
	eachFlag(func(name string, f cli.Flag) {
		if s := cli.FlagStringer(f); strings.Count(s, "(default") > 1 {
			t.Errorf("chipledger %s: %s", name, s)
		}
	})
}

// eachFlag calls fn with every flag of every command of the command line
// and the command's name ("pool fill").
func eachFlag(fn func(name string, f cli.Flag)) {
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{}, nil)
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			name := strings.TrimSpace(path + " " + cmd.Name)
			for _, f := range cmd.Flags {
				fn(name, f)
			}
			walk(name, cmd.Subcommands)
		}
	}
	walk("", app.Commands)
}

func TestTopLevelHelpPointsAtTheDemoFirst(t *testing.T) {
	r := runCLI(t, "--help")
	demo, dev := strings.Index(r.stdout, "chipledger demo"), strings.Index(r.stdout, "chipledger node --dev")
	if demo < 0 || dev < 0 || demo > dev {
		t.Errorf("help mentions chipledger demo at %d and node --dev at %d; want the demo first:\n%s", demo, dev, r.stdout)
	}
}

// TestUsageTextsNameOnlyRealFlags checks every command line of every
// command's usage text and description, as the docs test does for the docs.
func TestUsageTextsNameOnlyRealFlags(t *testing.T) {
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{}, nil)
	checked := 0
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			name := strings.TrimSpace(path + " " + cmd.Name)
			text := strings.ReplaceAll(cmd.UsageText+"\n"+cmd.Description, "\\\n", " ")
			for n, line := range strings.Split(text, "\n") {
				// [--flag VALUE] is optional syntax, not part of the word.
				line = strings.NewReplacer("[", " ", "]", " ", "|", " ").Replace(line)
				for _, m := range invocation.FindAllStringSubmatch(line, -1) {
					if checkInvocation(t, app, strings.Fields(m[1]), "usage of chipledger "+name, n+1) {
						checked++
					}
				}
			}
			walk(name, cmd.Subcommands)
		}
	}
	walk("", app.Commands)
	if checked < 30 {
		t.Fatalf("only %d command lines found in the usage texts: the parser is broken", checked)
	}
}

// TestEveryRequiredFlagIsCheckedByTheCommandLine: setupUsageErrors checks
// required flags itself (urfave/cli would print the whole help first); a
// required flag of a type unrequire does not know would slip back to that.
func TestEveryRequiredFlagIsCheckedByTheCommandLine(t *testing.T) {
	eachFlag(func(name string, f cli.Flag) {
		if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() {
			t.Errorf("chipledger %s --%s (%T) is still marked required", name, f.Names()[0], f)
		}
	})
}

// TestAdminSubcommandsRequireTheLedger: admin's subcommands share their
// flag values; --ledger stays required for every one of them.
func TestAdminSubcommandsRequireTheLedger(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{
		{"admin", "status"},
		{"admin", "leave", "--node-id", "n3"},
		{"admin", "transfer-leadership"},
		{"admin", "revoke-station", "--station-id", "00"},
	} {
		r := runCLI(t, args...)
		if !strings.Contains(fmt.Sprint(r.err), "missing required flag --ledger") {
			t.Errorf("chipledger %s: %v, want a missing --ledger", strings.Join(args, " "), r.err)
		}
	}
}

// TestFlagValueErrorsExitWithStatus2: a flag given a value it cannot take
// is a usage error (exit status 2) whichever command reads it, and says
// which flag.
func TestFlagValueErrorsExitWithStatus2(t *testing.T) {
	logKey, trust := nodeFiles(t)
	node := []string{"node", "--id", "n1", "--data-dir", t.TempDir(), "--log-key", logKey, "--trust", trust}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "bogus", "keys", "--origin", "x.example/log", "--out", filepath.Join(t.TempDir(), "k")}, "--log-level"},
		{append(slices.Clone(node), "--insecure", "--bootstrap", "--peer", "n1=127.0.0.1:7000"), "ID=RAFT_ADDR=API_ADDR"},
		{append(slices.Clone(node), "--insecure", "--bootstrap", "--join", "127.0.0.1:1"), "give only one of them"},
		{slices.Clone(node), "--insecure"},
		{[]string{"admin", "revoke-station", "--ledger", "127.0.0.1:1"}, "--station-id and --station-cert"},
		{[]string{"admin", "revoke-station", "--ledger", "127.0.0.1:1", "--station-id", "abcd"}, "64 hex digits"},
		{[]string{"provision", "--station", "s", "--ca", "c", "--master-keys", "m", "--ledger", "127.0.0.1:1", "--log-key", "k", "--emulate", "-5"}, "--emulate -5"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			clearEnv(t)
			r := runCLI(t, tc.args...)
			if exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), tc.want) {
				t.Fatalf("error %v (exit %d), want exit status 2 mentioning %q", r.err, exitStatus(r.err), tc.want)
			}
		})
	}
}
