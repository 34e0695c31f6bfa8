package queue

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests in this file re-execute the test binary as a helper process. The helper runs
// TestHelperProcess with helperEnv set to a mode and its arguments after "--".
const helperEnv = "DIBS_QUEUE_TEST_HELPER"

func helperCmd(t *testing.T, mode string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestHelperProcess is not a test: it is the body of the helper processes.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	var err error
	switch mode {
	case "claimer":
		err = helperClaimer(args[0], args[1], args[2])
	case "putter":
		err = helperPutter(args[0], args[1], args[2])
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// helperClaimer waits for the start file, then claims and acks every file in incoming/ it
// can get, appending the name of each file it acked to logPath.
func helperClaimer(root, logPath, start string) error {
	s, err := Open(root)
	if err != nil {
		return err
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(start); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("no start signal")
		}
		time.Sleep(time.Millisecond)
	}
	for {
		es, err := s.List(Incoming)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return nil
		}
		for _, e := range es {
			c, err := s.Claim(Incoming, e.Name)
			if errors.Is(err, ErrBusy) || errors.Is(err, ErrGone) {
				continue
			}
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, c.Reader()); err != nil {
				return err
			}
			if err := c.Ack(); err != nil {
				return err
			}
			if _, err := fmt.Fprintln(log, e.Name); err != nil {
				return err
			}
		}
	}
}

func TestClaim_TwoProcessesActOnEachFileOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	const files = 200
	s := newSpool(t)
	all := make(map[string]bool)
	for i := range files {
		name := fmt.Sprintf("f%03d.pgp", i)
		put(t, s, Incoming, name, name)
		all[name] = true
	}
	dir := t.TempDir()
	start := filepath.Join(dir, "start")
	var cmds []*exec.Cmd
	var logs []string
	for i := range 2 {
		logs = append(logs, filepath.Join(dir, fmt.Sprintf("acked-%d.log", i)))
		cmd := helperCmd(t, "claimer", s.Root(), logs[i], start)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(50 * time.Millisecond) // let both reach the start line
	if err := os.WriteFile(start, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v", i, err)
		}
	}
	seen := make(map[string]int) // name -> helper+1
	counts := make([]int, len(logs))
	for i, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range strings.Fields(string(b)) {
			if !all[name] {
				t.Errorf("helper %d acked %q, which was never queued", i, name)
			}
			if prev := seen[name]; prev != 0 {
				t.Errorf("%s acked twice: by helper %d and helper %d", name, prev-1, i)
			}
			seen[name] = i + 1
			counts[i]++
		}
	}
	for name := range all {
		if seen[name] == 0 {
			t.Errorf("%s acked by nobody", name)
		}
	}
	if got := dirNames(t, s.Dir(Incoming)); len(got) != 0 {
		t.Errorf("incoming/ not empty: %v", got)
	}
	t.Logf("helper 0 acked %d files, helper 1 acked %d", counts[0], counts[1])
}

// crashFileSize is the size of each file the putter writes: big enough that a kill often
// lands in the middle of one.
const crashFileSize = 1 << 20

// crashContent is the content of the file called name: a stream seeded by the name.
func crashContent(name string) []byte {
	b := make([]byte, crashFileSize)
	mrand.NewChaCha8(sha256.Sum256([]byte(name))).Read(b)
	return b
}

// helperPutter Puts files round-<n>-<i>.bin into incoming/ forever, and after each Put
// that returned nil appends the name to logPath and fsyncs it. Every third Put repeats an
// earlier name, so replacing a committed file is killed too.
func helperPutter(root, logPath, round string) error {
	s, err := Open(root)
	if err != nil {
		return err
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		n := i
		if i%3 == 2 {
			n = i - 1
		}
		name := fmt.Sprintf("round-%s-%05d.bin", round, n)
		if _, err := s.Put(Incoming, name, bytes.NewReader(crashContent(name)), 0); err != nil {
			return err
		}
		if _, err := fmt.Fprintln(log, name); err != nil {
			return err
		}
		if err := log.Sync(); err != nil {
			return err
		}
	}
}

func TestPut_KilledPutterLeavesNoHalfFileAndLosesNoCommittedOne(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	const rounds = 8
	s := newSpool(t)
	dir := t.TempDir()
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1))
	halfFiles := 0
	for round := range rounds {
		logPath := filepath.Join(dir, fmt.Sprintf("put-%d.log", round))
		cmd := helperCmd(t, "putter", s.Root(), logPath, strconv.Itoa(round))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+rng.IntN(180)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: putter ended with %v before it was killed", round, err)
		}

		committed := readLog(t, logPath)
		if len(committed) == 0 {
			t.Logf("round %d: killed before the first Put returned", round)
		}
		present := make(map[string]bool)
		for _, name := range dirNames(t, s.Dir(Incoming)) {
			present[name] = true
			if !strings.HasPrefix(name, fmt.Sprintf("round-%d-", round)) {
				t.Errorf("round %d: unexpected file %q in incoming/", round, name)
				continue
			}
			got, err := os.ReadFile(filepath.Join(s.Dir(Incoming), name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, crashContent(name)) {
				t.Errorf("round %d: %s is visible but not complete and correct (%d bytes)", round, name, len(got))
			}
		}
		for _, name := range committed {
			if !present[name] {
				t.Errorf("round %d: Put(%s) returned nil but the file is not in incoming/", round, name)
			}
		}
		for _, box := range []string{"quarantine", "outgoing"} {
			if left := dirNames(t, filepath.Join(s.Root(), box)); len(left) != 0 {
				t.Errorf("round %d: %s/ = %v, want empty", round, box, left)
			}
		}
		tmp := dirNames(t, filepath.Join(s.Root(), "tmp"))
		halfFiles += len(tmp)
		t.Logf("round %d: %d Puts returned, %d files in incoming/, %d left in tmp/",
			round, len(committed), len(present), len(tmp))
		// Start the next round clean, as an agent would: tmp/ leftovers are swept.
		if _, err := s.CleanTmp(0, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		for name := range present {
			os.Remove(filepath.Join(s.Dir(Incoming), name))
		}
	}
	t.Logf("%d rounds, %d kills landed inside a Put", rounds, halfFiles)
}

// readLog returns the complete lines of a log; a line cut by the kill is not a commit.
func readLog(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return out
		}
		out = append(out, strings.TrimSuffix(line, "\n"))
	}
}
