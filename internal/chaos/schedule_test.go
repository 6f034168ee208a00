package chaos

import (
	"reflect"
	"testing"
	"time"
)

func TestPlanIsDeterminedBySeed(t *testing.T) {
	a, b := Plan(42, 10*time.Minute, 5), Plan(42, 10*time.Minute, 5)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two plans from one seed differ")
	}
	if reflect.DeepEqual(a, Plan(43, 10*time.Minute, 5)) {
		t.Fatal("plans from seeds 42 and 43 are the same")
	}
}

func TestPlanKeepsAMajorityRunningAndRestartsInOrder(t *testing.T) {
	for seed := range int64(200) {
		plan := Plan(seed, 5*time.Minute, 5)
		down := map[int]bool{}
		var last time.Duration
		for _, s := range plan {
			if s.At < last {
				t.Fatalf("seed %d: step %s comes after one at %s", seed, s, last)
			}
			last = s.At
			switch s.Action {
			case Kill:
				down[s.Kill] = true
				if len(down) > 2 {
					t.Fatalf("seed %d: %s leaves %d of 5 nodes down", seed, s, len(down))
				}
			case Restart:
				if !down[s.Kill] {
					t.Fatalf("seed %d: %s restarts a node no kill took down", seed, s)
				}
				delete(down, s.Kill)
			}
		}
	}
}

func TestPlanDrawsEveryKindOfFault(t *testing.T) {
	plan := Plan(7, DefaultDuration, 5)
	seen := map[Action]int{}
	for _, s := range plan {
		seen[s.Action]++
	}
	for a := Kill; a <= Heal; a++ {
		if seen[a] == 0 {
			t.Errorf("a plan of %s has no %s step; it has %v", DefaultDuration, a, seen)
		}
	}
	if len(plan) < 20 {
		t.Errorf("a plan of %s has %d steps, want a fault every few seconds", DefaultDuration, len(plan))
	}
}
