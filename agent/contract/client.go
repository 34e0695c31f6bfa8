package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to a contract server at URL (e.g. http://finder.example.org/peer_finder).
type Client struct {
	URL string
	// HTTP is the client to use; nil means one with a 30-second timeout.
	HTTP *http.Client
}

// ErrNotFound means the server holds no such contract (expired, withdrawn, never posted).
var ErrNotFound = errors.New("no such contract")

const maxResponse = 16 << 20 // a listing of MaxContracts contracts with their keys

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *Client) endpoint(p string) (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("contract server URL %q is not an http:// or https:// URL", c.URL)
	}
	return strings.TrimRight(c.URL, "/") + p, nil
}

// Post posts a signed contract.
func (c *Client) Post(ctx context.Context, k *Contract) error {
	return c.do(ctx, http.MethodPost, "/post", k, nil)
}

// Unpost withdraws a contract.
func (c *Client) Unpost(ctx context.Context, u *Unpost) error {
	return c.do(ctx, http.MethodPost, "/unpost", u, nil)
}

// Fetch returns the named contract, checked (Validate) and verified (Verify): the server
// is not trusted to have done it.
func (c *Client) Fetch(ctx context.Context, name string) (*Contract, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	var k Contract
	if err := c.do(ctx, http.MethodGet, "/contracts/"+name, nil, &k); err != nil {
		return nil, err
	}
	if k.Name != name {
		return nil, fmt.Errorf("contract server: asked for %s, got %s", name, k.Name)
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	if _, err := k.Verify(); err != nil {
		return nil, err
	}
	return &k, nil
}

// List returns the contracts the server lists, unverified.
func (c *Client) List(ctx context.Context) ([]*Contract, error) {
	var l listing
	if err := c.do(ctx, http.MethodGet, "/contracts.json", nil, &l); err != nil {
		return nil, err
	}
	return l.Contracts, nil
}

func (c *Client) do(ctx context.Context, method, p string, in, out any) error {
	u, err := c.endpoint(p)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("contract server: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("contract server: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e errorResponse
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 300 {
			msg = msg[:300]
		}
		err := fmt.Errorf("contract server %s: %s", resp.Status, msg)
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("contract server: bad answer: %w", err)
		}
	}
	return nil
}
