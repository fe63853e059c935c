package router

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// The state folder has one owner at a time. A running router holds an
// exclusive lock on router.lock from its start until it begins to stop;
// a router that finds the lock held does not start (ErrAlreadyRunning).
// A stopping router releases the lock as soon as it has closed its
// listeners, so that a new router can start while the old one drains its
// requests; when the old one exits, it touches the folder only if it can
// take the lock again (no newer router runs) and then only what is still
// its own: the admin socket if it is the very file it created (same device
// and inode), router.json if it still names its instance.
//
// Every file operation goes through an os.Root opened on the folder before
// privileges are dropped (see privileges.go): after the drop, the router
// needs no access to the folders above it.

const lockFile = "router.lock"

// stateDir is the router's handle on its state folder.
type stateDir struct {
	root *os.Root
	lock *os.File
}

// openState opens (creating it with mode 0700 if missing) the folder and
// its lock file.
func openState(dir string) (*stateDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state folder: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open state folder: %w", err)
	}
	lock, err := root.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("open %s: %w", lockFile, err)
	}
	return &stateDir{root: root, lock: lock}, nil
}

func (s *stateDir) close() {
	s.lock.Close()
	s.root.Close()
}

// tryLock takes the folder's lock without waiting; it reports false when
// another router holds it.
func (s *stateDir) tryLock() (bool, error) {
	err := syscall.Flock(int(s.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", lockFile, err)
	}
	return true, nil
}

func (s *stateDir) unlock() {
	_ = syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
}

// fileID is the identity of a file: its device and inode.
type fileID struct{ dev, ino uint64 }

// identity returns the identity of name in the folder (not following a
// symbolic link).
func (s *stateDir) identity(name string) (fileID, error) {
	fi, err := s.root.Lstat(name)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no device and inode")
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// writeAtomic writes data to name through a temporary file in the folder:
// write, fsync, rename, fsync the folder.
func (s *stateDir) writeAtomic(name string, data []byte) error {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := "." + name + ".tmp" + hex.EncodeToString(rnd[:])
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer s.root.Remove(tmp) // fails harmlessly after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := s.root.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if d, err := s.root.Open("."); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// readInfo reads router.json.
func (s *stateDir) readInfo() (Status, error) {
	data, err := s.root.ReadFile(infoFile)
	if err != nil {
		return Status{}, err
	}
	var st Status
	err = json.Unmarshal(data, &st)
	return st, err
}

// chown gives the folder and the router's files in it to uid and gid,
// without following links. The folder is the platform's, not writable by
// apps, so nothing in it can be swapped for a link to elsewhere.
func (s *stateDir) chown(uid, gid int) error {
	d, err := s.root.Open(".")
	if err != nil {
		return err
	}
	err = d.Chown(uid, gid)
	d.Close()
	if err != nil {
		return fmt.Errorf("chown the state folder: %w", err)
	}
	for _, name := range []string{lockFile, routesFile, infoFile, socketFile} {
		if err := s.root.Lchown(name, uid, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("chown %s: %w", name, err)
		}
	}
	return nil
}
