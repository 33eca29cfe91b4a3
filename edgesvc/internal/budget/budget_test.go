package budget

import (
	"sync"
	"testing"
)

func TestBudget(t *testing.T) {
	b := New(100)
	if !b.Take(60) || !b.Take(40) || b.Take(1) || b.Used() != 100 {
		t.Fatalf("a budget of 100: used %d", b.Used())
	}
	b.Give(50)
	if !b.Take(50) || b.Take(1) {
		t.Fatal("bytes given back are not takeable again")
	}
	var off *Budget
	if !off.Take(1<<40) || off.Used() != 0 || !New(0).Take(1<<40) {
		t.Fatal("a nil or zero budget bounds something")
	}
}

func TestPair(t *testing.T) {
	user, edge := New(100), New(150)
	p := Pair{user, edge}
	if p.Take(80) != None || p.Take(30) != User || user.Used() != 80 || edge.Used() != 80 {
		t.Fatalf("user %d edge %d", user.Used(), edge.Used())
	}
	other := Pair{New(1000), edge}
	if other.Take(80) != Edge || other.User.Used() != 0 || edge.Used() != 80 {
		t.Fatal("a refusal by the edge's budget kept the user's bytes")
	}
	p.Give(80)
	if user.Used() != 0 || edge.Used() != 0 {
		t.Fatal("Give did not return both")
	}
}

// TestBudgetConcurrent: many takers never take more than the limit together.
func TestBudgetConcurrent(t *testing.T) {
	b := New(1000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := 0
	for range 50 {
		wg.Go(func() {
			for range 100 {
				if b.Take(7) {
					mu.Lock()
					taken += 7
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if taken > 1000 || int64(taken) != b.Used() {
		t.Fatalf("took %d of 1000 (used %d)", taken, b.Used())
	}
}
