package archive

import (
	"bufio"
	"bytes"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ignoreRule is one line of a .gitignore or .paddockignore file.
type ignoreRule struct {
	re      *regexp.Regexp // matches a slash-separated path relative to the file's folder
	negate  bool           // "!pattern": re-include what an earlier rule excluded
	dirOnly bool           // "pattern/": matches folders only
}

// ignoreFile is the rules of one ignore file, which apply below base.
type ignoreFile struct {
	base  string // slash-separated folder relative to the packed root; "" for the root
	rules []ignoreRule
}

// parseIgnore parses gitignore syntax (see gitignore(5)): blank lines and
// "#" comments are skipped, "\" escapes a leading "#" or "!" and trailing
// spaces, "!" negates, a trailing "/" matches folders only, a "/" at the
// start or in the middle anchors the pattern to the file's folder, "*", "?"
// and "[...]" never match "/", and "**" matches any number of folders in
// "**/x", "x/**" and "x/**/y". A pattern that cannot be compiled is ignored,
// as git does.
func parseIgnore(base string, data []byte) ignoreFile {
	f := ignoreFile{base: base}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		if r, ok := parseIgnoreLine(sc.Text()); ok {
			f.rules = append(f.rules, r)
		}
	}
	return f
}

func parseIgnoreLine(line string) (ignoreRule, bool) {
	line = strings.TrimSuffix(line, "\r")
	line = trimTrailingSpaces(line)
	if line == "" || line[0] == '#' {
		return ignoreRule{}, false
	}
	var r ignoreRule
	if line[0] == '!' {
		r.negate = true
		line = line[1:]
	}
	if strings.HasSuffix(line, "/") && !strings.HasSuffix(line, `\/`) {
		r.dirOnly = true
		line = strings.TrimRight(line, "/")
	}
	if line == "" {
		return ignoreRule{}, false
	}
	anchored := strings.Contains(line, "/")
	line = strings.TrimPrefix(line, "/")
	if line == "" {
		return ignoreRule{}, false
	}
	expr := globToRegexp(line)
	if !anchored {
		// A pattern without a slash matches a name at any depth.
		expr = "(?:.*/)?" + expr
	}
	re, err := regexp.Compile("^" + expr + "$")
	if err != nil {
		return ignoreRule{}, false
	}
	r.re = re
	return r, true
}

// trimTrailingSpaces removes trailing spaces unless escaped with a backslash.
func trimTrailingSpaces(s string) string {
	for strings.HasSuffix(s, " ") {
		t := strings.TrimSuffix(s, " ")
		if strings.HasSuffix(t, `\`) && !strings.HasSuffix(t, `\\`) {
			return s // "\ " keeps the space; the escape is handled by globToRegexp
		}
		s = t
	}
	return s
}

// globToRegexp translates one gitignore pattern (without a leading "/" or a
// trailing "/") into a regular expression body.
func globToRegexp(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '*' && strings.HasPrefix(p[i:], "**") && (i == 0 || p[i-1] == '/') && (i+2 == len(p) || p[i+2] == '/'):
			// A "**" that is a whole path element.
			switch {
			case i == 0 && i+2 == len(p): // "**": everything
				b.WriteString(".*")
				i += 2
			case i == 0: // "**/x": x in any folder
				b.WriteString("(?:.*/)?")
				i += 3
			case i+2 == len(p): // "x/**": everything inside x; the "/" is already written
				b.WriteString(".+")
				i += 2
			default: // "x/**/y": zero or more folders between
				b.WriteString("(?:.*/)?")
				i += 3
			}
		case c == '*':
			for i < len(p) && p[i] == '*' { // other runs of "*" are a plain "*"
				i++
			}
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
			i++
		case c == '[':
			class, n := globClass(p[i:])
			if n == 0 {
				b.WriteString(`\[`)
				i++
				continue
			}
			b.WriteString(class)
			i += n
		case c == '\\' && i+1 < len(p):
			b.WriteString(regexp.QuoteMeta(p[i+1 : i+2]))
			i += 2
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
			i++
		}
	}
	return b.String()
}

// globClass translates a bracket expression at the start of p. It returns the
// regular expression and the number of bytes used, or 0 if p has no closing
// "]" (then "[" is a literal). A class never matches "/".
func globClass(p string) (string, int) {
	i := 1
	negate := false
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		negate = true
		i++
	}
	var b strings.Builder
	first := true
	for ; i < len(p); i++ {
		c := p[i]
		if c == ']' && !first {
			if b.Len() == 0 {
				return "", 0
			}
			if negate {
				return "[^/" + b.String() + "]", i + 1
			}
			return "(?:[" + b.String() + "])", i + 1
		}
		first = false
		if c == '\\' && i+1 < len(p) {
			i++
			c = p[i]
		}
		switch {
		case c == '/':
			continue // never matches "/"
		case c == '-' && p[i-1] != '\\':
			// a range operator (or a literal at either end, as in regexp)
		case !isAlnum(c) && c < utf8.RuneSelf:
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return "", 0
}

// ignored reports whether the slash-separated path rel (relative to the
// packed root) is excluded by the stack of ignore files, shallowest first.
// The last matching rule wins, and deeper files override shallower ones.
func ignored(stack []ignoreFile, rel string, isDir bool) bool {
	excluded := false
	for _, f := range stack {
		sub := rel
		if f.base != "" {
			if !strings.HasPrefix(rel, f.base+"/") {
				continue
			}
			sub = rel[len(f.base)+1:]
		}
		for _, r := range f.rules {
			if r.dirOnly && !isDir {
				continue
			}
			if r.re.MatchString(sub) {
				excluded = !r.negate
			}
		}
	}
	return excluded
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
