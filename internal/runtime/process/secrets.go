package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"paddock.dev/paddock/internal/runtime"
)

// Secrets reach an instance without touching the disk: the runtime hands
// them to the supervisor in its start request, over the supervisor's
// socket; the supervisor keeps them in memory and gives them to every
// process it starts, the restarts while the server is down included; those
// injected as files are written by the runtime to a tmpfs mounted for the instance alone (SecretsDir/ID, mode
// 0700, owned by the app's user), named in $PADDOCK_SECRETS_DIR. The mounts
// live outside the data folder, so that no backup of it copies them.

// writeSecretFiles mounts a tmpfs at path and writes the instance's
// secrets that are files into it; it returns path, or "" when there are
// none.
func writeSecretFiles(path string, s runtime.Spec) (string, error) {
	var files []runtime.Secret
	size := 1 << 20
	for _, sec := range s.Secrets {
		if sec.AsFile {
			files = append(files, sec)
			size += len(sec.Value) + 4096
		}
	}
	if len(files) == 0 {
		return "", nil
	}
	// The app's user passes through the folders above to its own.
	parent := filepath.Dir(path)
	if err := os.MkdirAll(parent, 0o711); err != nil {
		return "", err
	}
	for _, d := range []string{filepath.Dir(parent), parent} {
		if err := os.Chmod(d, 0o711); err != nil {
			return "", err
		}
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		return "", err
	}
	uid, gid := s.UID, s.GID
	if uid == 0 {
		uid, gid = uint32(os.Getuid()), uint32(os.Getgid())
	}
	opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700,uid=%d,gid=%d", size, len(files)+16, uid, gid)
	if err := syscall.Mount("tmpfs", path, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, opts); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("mount a tmpfs for the instance's secret files (the server must run as root for secrets given as files): %w", err)
	}
	for _, sec := range files {
		f := filepath.Join(path, sec.Name)
		if err := os.WriteFile(f, sec.Value, 0o400); err != nil {
			unmountSecrets(path)
			return "", fmt.Errorf("write secret file %s: %w", sec.Name, err)
		}
		if err := os.Chown(f, int(uid), int(gid)); err != nil {
			unmountSecrets(path)
			return "", err
		}
	}
	return path, nil
}

// unmountSecrets takes an instance's secrets tmpfs at path away, if it has
// one.
func unmountSecrets(path string) {
	if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return // still mounted: leave the folder for the next try
	}
	os.Remove(path)
	os.Remove(filepath.Dir(path)) // the runtime's, once it holds none
}

// envSecrets returns the secrets given as environment variables.
func envSecrets(secrets []runtime.Secret) []runtime.Secret {
	var out []runtime.Secret
	for _, s := range secrets {
		if !s.AsFile {
			out = append(out, s)
		}
	}
	return out
}

// secretsEnv is the environment entries of secrets.
func secretsEnv(secrets []runtime.Secret) []string {
	env := make([]string, 0, len(secrets))
	for _, s := range secrets {
		env = append(env, s.Name+"="+string(s.Value))
	}
	return env
}
