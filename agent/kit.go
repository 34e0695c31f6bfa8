package agent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/dibs-backup/dibs/queue"
)

// A recovery kit is one ASCII-armored file holding everything recover_all needs: the
// secret key, the peer list with the peers' keys, and the options. It is a tar archive
// inside an armor block, so it survives e-mail and paper-and-scanner round trips and its
// CRC catches damage.
const kitBlockType = "DIBS RECOVERY KIT"

// kitFiles are the paths a kit may hold, relative to DIBS_DIR.
func kitAllowed(name string) bool {
	switch name {
	case secretKeyFile, publicKeyFile, peersFile, optionsFile:
		return true
	}
	dir, file := filepath.Split(name)
	return dir == peerKeysDir+"/" && strings.HasSuffix(file, ".asc") && queue.ValidPeer(strings.TrimSuffix(file, ".asc"))
}

// ExportRecoveryKit writes the kit to w.
func (n *Node) ExportRecoveryKit(w io.Writer) error {
	names := []string{secretKeyFile, publicKeyFile, peersFile, optionsFile}
	des, err := os.ReadDir(filepath.Join(n.Dir, peerKeysDir))
	if err != nil {
		return err
	}
	for _, de := range des {
		if name := peerKeysDir + "/" + de.Name(); kitAllowed(name) {
			names = append(names, name)
		}
	}
	aw, err := armor.Encode(w, kitBlockType, map[string]string{
		"Comment": "dibs recovery kit of " + n.ID.Name() + ": it holds your SECRET key; keep it safe",
	})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(aw)
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(n.Dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: time.Now(), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return aw.Close()
}

// ImportRecoveryKit sets up dir, which must have no key, from a kit.
func ImportRecoveryKit(dir string, r io.Reader) (*Node, error) {
	if _, err := os.Stat(filepath.Join(dir, secretKeyFile)); err == nil {
		return nil, fmt.Errorf("%s already has a key; import a recovery kit into an empty DIBS_DIR", dir)
	}
	blk, err := armor.Decode(r)
	if err != nil {
		return nil, fmt.Errorf("not a dibs recovery kit: %w", err)
	}
	if blk.Type != kitBlockType {
		return nil, fmt.Errorf("not a dibs recovery kit (armor type %q)", blk.Type)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(blk.Body)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("recovery kit is damaged: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg || !kitAllowed(hdr.Name) || hdr.Size > 4<<20 {
			return nil, fmt.Errorf("recovery kit holds an unexpected entry %q", hdr.Name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("recovery kit is damaged: %w", err)
		}
		files[hdr.Name] = b
	}
	// Reading to the end checked the armor CRC.
	if _, ok := files[secretKeyFile]; !ok {
		return nil, fmt.Errorf("recovery kit has no secret key")
	}
	if err := makeDirs(dir); err != nil {
		return nil, err
	}
	// The key goes last: a half-imported kit leaves a directory that still counts as empty.
	for name, b := range files {
		if name == secretKeyFile {
			continue
		}
		if err := queue.WriteFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	if err := queue.WriteFileAtomic(filepath.Join(dir, secretKeyFile), files[secretKeyFile], 0o600); err != nil {
		return nil, err
	}
	return Open(dir)
}
