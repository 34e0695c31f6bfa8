package agent_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium runs Debian's headless chromium with args; the test skips where it is not
// installed (.ci/run installs it).
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// --no-sandbox: CI runs as root, where chromium's sandbox will not start.
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// A real browser loads the status page of a daemon that holds stored files, a degraded
// file and a queued message, and the page shows what a person looks for: the peers, the
// degraded file first among the files, carol's queue of one. With DIBS_STATUS_SCREENSHOT
// set (bench/status-screenshot.sh) it also writes a screenshot there, as a phone and a
// desktop show it.
func TestStatus_RealBrowser(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
	}
	_, base := statusNode(t)
	dom := chromium(t, "--dump-dom", base+"/")
	for _, want := range []string{"<table id=\"peers\">", "bob", "carol", "dave", "erin", "/damaged.txt", "degraded: 1", "stored: 2"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page as chromium shows it lacks %q", want)
		}
	}
	// The degraded file comes before the stored ones.
	files := dom[strings.Index(dom, `<table id="files">`):]
	if d, s := strings.Index(files, "/damaged.txt"), strings.Index(files, "/notes.txt"); d < 0 || s < 0 || d > s {
		t.Errorf("the degraded file is not listed first (at %d, a stored one at %d)", d, s)
	}
	// carol's row shows the HELLO waiting for her.
	row := dom[strings.Index(dom, `<td data-label="peer">carol</td>`):]
	row = row[:strings.Index(row, "</tr>")]
	if !strings.Contains(row, `<td class="num queue-depth" data-label="queued">1</td>`) {
		t.Errorf("carol's row does not show a queue of 1: %s", row)
	}
	if out := os.Getenv("DIBS_STATUS_SCREENSHOT"); out != "" {
		for _, shot := range []struct{ suffix, size string }{{"-phone.png", "412,1600"}, {"-desktop.png", "1400,1000"}} {
			path, _ := filepath.Abs(strings.TrimSuffix(out, ".png") + shot.suffix)
			chromium(t, "--hide-scrollbars", "--window-size="+shot.size, "--screenshot="+path, base+"/")
			if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
				t.Fatalf("no screenshot at %s: %v", path, err)
			}
			t.Logf("screenshot: %s", path)
		}
	}
}
