package maildoor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUsers_ReloadAndKeepOnBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.toml")
	writeFile(t, path, usersTOML(t, "alice"))
	u, err := OpenUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Login("alice", password("alice")); !ok {
		t.Fatal("alice cannot log in by name")
	}
	if _, ok := u.Login(addr("ALICE"), password("alice")); !ok {
		t.Fatal("alice cannot log in by address, in capitals")
	}
	if _, ok := u.Login("alice", "nope"); ok {
		t.Fatal("a wrong password logs in")
	}
	if _, ok := u.ByMail(addr("bob")); ok {
		t.Fatal("bob is a user before he is added")
	}

	touch := func(s string) {
		writeFile(t, path, s)
		later := time.Now().Add(time.Duration(len(s)) * time.Second)
		os.Chtimes(path, later, later)
	}
	touch(usersTOML(t, "alice", "bob")) // argon2id for bob
	if _, ok := u.Login(addr("bob"), password("bob")); !ok {
		t.Fatal("bob (argon2id) cannot log in after the file changed")
	}
	if !u.Local(domain) || u.Local("elsewhere.example") {
		t.Fatal("Local is wrong")
	}

	touch("[[user]]\nkey = \"nope\"\n")
	if err := u.Reload(); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("Reload of a bad file = %v; want an error about the key", err)
	}
	if _, ok := u.Login(addr("bob"), password("bob")); !ok {
		t.Fatal("a bad file dropped the users from before")
	}
}

func TestUsers_RefusesClearPasswords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.toml")
	writeFile(t, path, "[[user]]\nkey = \""+string(fp(t, "alice"))+"\"\nmail = \"a@relay.test\"\npassword = \"hunter2\"\n")
	if _, err := OpenUsers(path); err == nil || !strings.Contains(err.Error(), "never a password in clear") {
		t.Fatalf("OpenUsers = %v; want a refusal of the clear password", err)
	}
}
