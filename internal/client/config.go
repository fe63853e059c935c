package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Config is what the CLI keeps of the server it talks to.
type Config struct {
	Server string `json:"server"`       // base URL, e.g. "https://127.0.0.1:7070"
	CA     string `json:"ca,omitempty"` // PEM of the server's CA, pinned: no other CA is trusted
	Token  string `json:"token"`
}

// ConfigPath is the CLI config file: $XDG_CONFIG_HOME/paddock/config.json,
// else ~/.config/paddock/config.json.
func ConfigPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the config folder: %w (set XDG_CONFIG_HOME)", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "paddock", "config.json"), nil
}

// LoadConfig reads the config file, then applies PADDOCK_ADDR and
// PADDOCK_TOKEN over it.
func LoadConfig() (Config, error) {
	var c Config
	path, err := ConfigPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return c, err
	default:
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("read %s: %w (fix or delete it; `paddock up` writes it anew)", path, err)
		}
	}
	if v := os.Getenv("PADDOCK_ADDR"); v != "" {
		c.Server = v
	}
	if v := os.Getenv("PADDOCK_TOKEN"); v != "" {
		c.Token = v
	}
	if c.Server == "" {
		return c, fmt.Errorf("no Paddock server configured: start one with `paddock up`, or set PADDOCK_ADDR and PADDOCK_TOKEN")
	}
	return c, nil
}

// SaveConfig writes c to the config file, readable by its owner only.
func SaveConfig(c Config) error {
	path, err := ConfigPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
