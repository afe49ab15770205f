package sshx

import (
	"bufio"
	"strings"
)

// RemoteCommand is the command every script runs under on a VM: bash as
// root, reading the script from stdin, failing instead of prompting when
// sudo would ask for a password.
const RemoteCommand = "sudo -n bash -s"

// RecipeTag starts the line that names a script: scripts begin with
// "#!/usr/bin/env bash" and then "# kforge-recipe: <name>".
const RecipeTag = "# kforge-recipe:"

// recipeScanLines is how many leading lines RecipeName looks at.
const recipeScanLines = 5

// RecipeName returns the name a script gives itself on its
// "# kforge-recipe: <name>" line (looked for among its first lines), or ""
// if it has none.
func RecipeName(script string) string {
	sc := bufio.NewScanner(strings.NewReader(script))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for i := 0; i < recipeScanLines && sc.Scan(); i++ {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, RecipeTag); ok {
			return strings.TrimSpace(name)
		}
	}
	return ""
}
