package manifest

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// checkParsed holds for every manifest a parser accepts: it validates, and
// its JSON form round-trips.
func checkParsed(t *testing.T, m *Manifest, err error) {
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not match ErrInvalid: %v", err)
		}
		return
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("accepted a manifest that does not validate: %v", err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got Manifest
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, m) {
		t.Fatalf("JSON round trip: got %+v, want %+v", &got, m)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		helloTOML,
		"[processes.web]\ncommand = \"./server\"\n",
		"processes.web = { command = \"x\", port = 8080, health = { path = \"/\" } }\n",
		"[processes.web]\ncomand = 1\n[buld]\n",
		"[[processes.web]]\ncommand = \"x\"\n",
		"[processes.web]\ncommand = \"x\"\nmemory = \"1GiB\"\nstop_timeout = \"1m\"\n",
		"name = \"x\"\nname = \"y\"\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		checkParsed(t, m, err)
	})
}

func FuzzParseProcfile(f *testing.F) {
	for _, s := range []string{
		"web: ./server\nworker: ./worker\n",
		"# comment\n\nweb:bundle exec puma -p $PORT\r\n",
		"web\nweb:\nWeb: x\nweb: a\nweb: b\n",
		"\ufeffweb: x",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseProcfile(b)
		checkParsed(t, m, err)
	})
}
