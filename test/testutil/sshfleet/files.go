package sshfleet

import (
	"encoding/base64"
	"regexp"
	"strings"
)

// writeRE matches the file blocks of kforge's rendered scripts:
// kforge_write PATH MODE OWNER [VALIDATOR...] <<'KFORGE_EOF' + base64 lines.
var writeRE = regexp.MustCompile(`(?m)^\s*kforge_write '?([^' ]+)'?[^\n]*<<'KFORGE_EOF'\n((?:[A-Za-z0-9+/=]*\n)*?)KFORGE_EOF`)

// Files returns the files a recorded script writes, by path, decoded.
func (c Call) Files() map[string][]byte {
	files := map[string][]byte{}
	for _, m := range writeRE.FindAllStringSubmatch(string(c.Stdin), -1) {
		b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(m[2], "\n", ""))
		if err == nil {
			files[m[1]] = b
		}
	}
	return files
}

// Text returns the script with the files it writes decoded and appended,
// for tests that look for a value wherever the script carries it.
func (c Call) Text() string {
	var b strings.Builder
	b.Write(c.Stdin)
	for path, content := range c.Files() {
		b.WriteString("\n# file " + path + "\n")
		b.Write(content)
	}
	return b.String()
}
