package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/spec"
)

// Output formats.
const (
	outputText = "text"
	outputJSON = "json"
)

func addOutputFlag(c *cobra.Command, dst *string) {
	c.Flags().StringVarP(dst, "output", "o", outputText, "output format: text or json (json prints one document on stdout; progress stays on stderr)")
}

func checkOutput(o string) error {
	if o != outputText && o != outputJSON {
		return spec.Usagef("invalid --output %q: use text or json", o)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fprintf(w io.Writer, format string, a ...any) { fmt.Fprintf(w, format, a...) }
