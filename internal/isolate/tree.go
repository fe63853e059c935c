package isolate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
)

// GiveTree gives the folder dir and everything in it to uid and gid.
//
// It must be called before the app can reach dir (dir made by root with
// mode 0700, say, or inside such a folder): every entry is re-owned from
// the bottom up, through an os.Root on dir that follows no link out of it,
// and dir itself goes last. Until then the app cannot enter dir, so it can
// change nothing under the walk, and a folder swapped for a link could not
// send it elsewhere anyway.
func GiveTree(dir string, uid, gid int) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("give %s to uid %d: %w", dir, uid, err)
	}
	defer root.Close()
	if err := giveBelow(root, ".", uid, gid); err != nil {
		return fmt.Errorf("give %s to uid %d: %w", dir, uid, err)
	}
	if err := root.Lchown(".", uid, gid); err != nil {
		return fmt.Errorf("give %s to uid %d: %w", dir, uid, err)
	}
	return nil
}

func giveBelow(root *os.Root, rel string, uid, gid int) error {
	f, err := root.Open(rel)
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := path.Join(rel, e.Name())
		if e.IsDir() {
			if err := giveBelow(root, name, uid, gid); err != nil {
				return err
			}
		}
		if err := root.Lchown(name, uid, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
