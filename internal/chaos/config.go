package chaos

import (
	"fmt"
	"strconv"
	"time"
)

// Config is what a run does.
type Config struct {
	// Seed draws the fault plan; the same seed replays the same plan.
	Seed int64
	// Duration is how long faults are injected.
	Duration time.Duration
	// Nodes is the cluster's size.
	Nodes int
	// Clients is the number of appending clients, Rate their appends per
	// second together, and Pollers the number of checkpoint pollers.
	Clients int
	Rate    float64
	Pollers int
	// Dir, if set, keeps the nodes' data and logs there after the run.
	Dir string
	// Bin, if set, is the chipledger binary to run, instead of one built
	// from the module.
	Bin string
}

// The defaults of a Config, sized for CI: about two minutes in all.
const (
	DefaultDuration = 90 * time.Second
	DefaultNodes    = 5
	DefaultClients  = 8
	DefaultRate     = 100
	DefaultPollers  = 2
)

// The environment variables a Config is read from.
const (
	EnvDuration = "CHIPLEDGER_CHAOS_DURATION"
	EnvSeed     = "CHIPLEDGER_CHAOS_SEED"
	EnvDir      = "CHIPLEDGER_CHAOS_DIR"
	EnvBin      = "CHIPLEDGER_CHAOS_BIN"
)

// ConfigFromEnv returns the default Config with what getenv sets:
// CHIPLEDGER_CHAOS_DURATION (a time.ParseDuration string),
// CHIPLEDGER_CHAOS_SEED (an integer), CHIPLEDGER_CHAOS_DIR and
// CHIPLEDGER_CHAOS_BIN. Without a seed, it takes one from the clock.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Seed:     time.Now().UnixNano(),
		Duration: DefaultDuration,
		Nodes:    DefaultNodes,
		Clients:  DefaultClients,
		Rate:     DefaultRate,
		Pollers:  DefaultPollers,
		Dir:      getenv(EnvDir),
		Bin:      getenv(EnvBin),
	}
	if v := getenv(EnvDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("%s=%q: want a positive duration such as 20m", EnvDuration, v)
		}
		c.Duration = d
	}
	if v := getenv(EnvSeed); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("%s=%q: want an integer", EnvSeed, v)
		}
		c.Seed = s
	}
	return c, nil
}

// Entries returns how many escrow entries to make for a run: enough for
// its rate over its duration, with room for the appends after the faults.
func (c Config) Entries() int {
	return int(c.Rate*(c.Duration.Seconds()+30)) + 100
}
