package artifacts

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Sums maps layout paths to their SHA-256 (lowercase hex).
type Sums map[string]string

var (
	sumLineRE = regexp.MustCompile(`^([0-9a-fA-F]{64}) [ *](.+)$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ParseSums reads the sha256sum format ("<hex>  <path>" per line; "*"
// before the path marks binary mode). Paths must be clean relative paths
// of the layout.
func ParseSums(b []byte) (Sums, error) {
	out := Sums{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		m := sumLineRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s line %d: want \"<sha256>  <path>\"", SumsFile, n)
		}
		p := strings.TrimPrefix(m[2], "./")
		if err := validPath(p); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", SumsFile, n, err)
		}
		out[p] = strings.ToLower(m[1])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", SumsFile, err)
	}
	return out, nil
}

// Format renders sums in the sha256sum format, sorted by path.
func (s Sums) Format() []byte {
	paths := make([]string, 0, len(s))
	for p := range s {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b bytes.Buffer
	for _, p := range paths {
		fmt.Fprintf(&b, "%s  %s\n", s[p], p)
	}
	return b.Bytes()
}

// validPath refuses absolute paths, "..", and anything but the layout's
// alphabet, so that a checksum list cannot name a file outside the
// artifacts directory on a VM.
func validPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." {
		return fmt.Errorf("path %q is not a clean relative path", p)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+/", r)) {
			return fmt.Errorf("path %q has a character outside [A-Za-z0-9._+/-]", p)
		}
	}
	return nil
}

// LoadSums reads the checksum list of a directory or mirror (the
// upstreams have none: it returns nil). client fetches a mirror's.
func LoadSums(ctx context.Context, src Source, client *http.Client) (Sums, error) {
	switch {
	case src.Dir != "":
		if err := src.Check(); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(src.LocalPath(SumsFile))
		if err != nil {
			return nil, fmt.Errorf("--artifacts: %w", err)
		}
		return ParseSums(b)
	case src.URL != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URLOf(SumsFile), nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("--artifacts: read %s: %w", src.URLOf(SumsFile), err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("--artifacts: read %s: HTTP %s", src.URLOf(SumsFile), resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		if err != nil {
			return nil, fmt.Errorf("--artifacts: read %s: %w", src.URLOf(SumsFile), err)
		}
		return ParseSums(b)
	}
	return nil, nil
}

// Pick returns the checksums of files, and an error naming every file the
// list lacks.
func (s Sums) Pick(files []File) (Sums, error) {
	out := Sums{}
	var missing []string
	for _, f := range files {
		sum, ok := s[f.Path]
		if !ok {
			missing = append(missing, f.Path)
			continue
		}
		out[f.Path] = sum
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, &MissingError{Paths: missing}
	}
	return out, nil
}

// MissingError names the files an artifacts directory or mirror lacks.
type MissingError struct {
	Paths []string
	// Mismatched are files present whose content does not match their
	// checksum.
	Mismatched []string
}

func (e *MissingError) Error() string {
	var parts []string
	if len(e.Paths) > 0 {
		parts = append(parts, fmt.Sprintf("%d file(s) missing: %s", len(e.Paths), strings.Join(e.Paths, ", ")))
	}
	if len(e.Mismatched) > 0 {
		parts = append(parts, fmt.Sprintf("%d file(s) do not match their SHA-256 in %s: %s", len(e.Mismatched), SumsFile, strings.Join(e.Mismatched, ", ")))
	}
	return "artifacts: " + strings.Join(parts, "; ")
}

// Verify checks that every file of sums exists in the directory source
// and matches its checksum, hashing files concurrently.
func Verify(ctx context.Context, src Source, sums Sums) error {
	if src.Dir == "" {
		return nil
	}
	paths := make([]string, 0, len(sums))
	for p := range sums {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var (
		mu             sync.Mutex
		miss, mismatch []string
		firstErr       error
		wg             sync.WaitGroup
		sem            = make(chan struct{}, runtime.GOMAXPROCS(0))
	)
	for _, p := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got, err := HashFile(ctx, src.LocalPath(p))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, os.ErrNotExist):
				miss = append(miss, p)
			case err != nil:
				if firstErr == nil {
					firstErr = err
				}
			case got != sums[p]:
				mismatch = append(mismatch, p)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if len(miss)+len(mismatch) > 0 {
		sort.Strings(miss)
		sort.Strings(mismatch)
		return &MissingError{Paths: miss, Mismatched: mismatch}
	}
	return nil
}

// Present checks that every file of sums exists in the directory source,
// without reading it.
func Present(_ context.Context, src Source, sums Sums) error {
	if src.Dir == "" {
		return nil
	}
	var miss []string
	for p := range sums {
		if st, err := os.Stat(src.LocalPath(p)); err != nil || !st.Mode().IsRegular() {
			miss = append(miss, p)
		}
	}
	if len(miss) > 0 {
		sort.Strings(miss)
		return &MissingError{Paths: miss}
	}
	return nil
}

// HashFile returns the SHA-256 of a file in lowercase hex.
func HashFile(ctx context.Context, name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", fmt.Errorf("hash %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool { return sha256RE.MatchString(s) }
