package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestNothingSecretPrints prints every type that holds a key or a value
// with every fmt verb, in slog and as JSON, and looks for the key and the
// value in any form.
func TestNothingSecretPrints(t *testing.T) {
	ctx := context.Background()
	kek, _ := GenerateKEK()
	root := kek.root[:]
	value := []byte("hunter2-but-longer-and-secret")
	kr, err := New(ctx, Config{KEK: kek, Store: NewMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Seal(ctx, value, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Digest(ctx, value); err != nil {
		t.Fatal(err)
	}
	red := NewRedactor(map[string][]byte{"PASSWORD": value})
	w := red.NewWriter(&bytes.Buffer{})
	w.Write(value[:5]) // a piece held back

	var out bytes.Buffer
	for _, v := range []any{kek, kr, red, w, KEK(kek)} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		fmt.Fprintln(&out, v)
		j, _ := json.Marshal(v)
		out.Write(j)
	}
	log := slog.New(slog.NewJSONHandler(&out, nil))
	log.Info("keys", "kek", kek, "keyring", kr, "redactor", red, "writer", w)
	slog.New(slog.NewTextHandler(&out, nil)).Info("keys", "kek", kek, "keyring", kr)

	printed := out.String()
	if !strings.Contains(printed, "[REDACTED]") {
		t.Fatalf("output has no [REDACTED]:\n%s", printed)
	}
	for _, secret := range [][]byte{root, value} {
		for _, form := range [][]byte{
			secret,
			[]byte(hex.EncodeToString(secret)),
			[]byte(strings.ToUpper(hex.EncodeToString(secret))),
			[]byte(base64.StdEncoding.EncodeToString(secret)),
			[]byte(fmt.Sprint([]byte(secret))), // [104 117 ...]
			[]byte(fmt.Sprint([]byte(secret))[1:20]),
		} {
			if bytes.Contains(out.Bytes(), form) {
				t.Errorf("a secret appears in printed output as %q", form)
			}
		}
	}
}
