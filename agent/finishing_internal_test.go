package agent

import (
	"context"
	"testing"
	"time"
)

// A stop lets the transfer in hand go on for the grace, and no longer.
func TestFinishing_OutlivesTheStopByTheGrace(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	fctx, done := finishing(ctx, 2*time.Second)
	defer done()
	stop()
	time.Sleep(50 * time.Millisecond)
	if err := fctx.Err(); err != nil {
		t.Fatalf("the transfer ended with the stop: %v", err)
	}
	select {
	case <-fctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the transfer was not ended after the grace")
	}
}

// A transfer that ends first ends its context, stop or not.
func TestFinishing_DoneEndsIt(t *testing.T) {
	fctx, done := finishing(context.Background(), time.Hour)
	done()
	if fctx.Err() == nil {
		t.Fatal("done did not end the transfer's context")
	}
	ctx, stop := context.WithCancel(context.Background())
	fctx, done = finishing(ctx, time.Hour)
	stop()
	done()
	if fctx.Err() == nil {
		t.Fatal("done after a stop did not end the transfer's context")
	}
}
