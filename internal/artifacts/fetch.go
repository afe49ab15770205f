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
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kforge/kforge/internal/atomicfile"
)

// FetchOptions configure Fetch.
type FetchOptions struct {
	Set    Set
	Arches []string
	// Images also fetches the container images (pulled from their
	// registries and written as docker-archive tarballs).
	Images bool
	// Dir is the artifacts directory to fill; it is created if missing.
	Dir string
	// Client downloads files and talks to registries (default: Go's
	// default transport, which honours HTTPS_PROXY and SSL_CERT_FILE).
	Client *http.Client
	// Parallel bounds concurrent downloads (default 4).
	Parallel int
	// Progress, if set, is told of each file as it is kept, fetched or
	// fails; calls are serialised.
	Progress func(FetchResult)
}

// Fetch outcomes.
const (
	FetchKept    = "kept"    // already in the directory, matching SHA256SUMS
	FetchFetched = "fetched" // downloaded and checked
	FetchFailed  = "failed"
)

// FetchResult is what happened to one file.
type FetchResult struct {
	Path   string `json:"path"`
	Status string `json:"status"`
	Bytes  int64  `json:"bytes,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Source is where it came from (a URL, or an image reference).
	Source string `json:"source,omitempty"`
	Error  string `json:"error,omitempty"`
}

// FetchError reports the files Fetch could not get; the others are in the
// directory and in its SHA256SUMS.
type FetchError struct{ Failed []FetchResult }

func (e *FetchError) Error() string {
	var parts []string
	for _, f := range e.Failed {
		parts = append(parts, f.Path+": "+f.Error)
	}
	return fmt.Sprintf("%d artifact(s) could not be fetched: %s", len(e.Failed), strings.Join(parts, "; "))
}

// Fetch fills an artifacts directory with every file of the Set for the
// given architectures, from the public upstreams: each download is checked
// against the checksum kforge pins for it or, failing that, the checksum
// file its project publishes beside it (a file with no checksum is never
// kept), and images are pulled by their registry's content digests. Files
// already present with their checksum in SHA256SUMS are kept, so a fetch
// that stopped continues where it stopped. SHA256SUMS is rewritten after
// every file.
func Fetch(ctx context.Context, o FetchOptions) ([]FetchResult, error) {
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	files, err := o.Set.All(o.Arches, o.Images)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("artifacts directory: %w", err)
	}
	sums := Sums{}
	if b, err := os.ReadFile(filepath.Join(o.Dir, SumsFile)); err == nil {
		if sums, err = ParseSums(b); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Dir, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f := &fetcher{o: o, sums: sums, checksumFiles: map[string][]byte{}}
	results := make([]FetchResult, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.Parallel)
	for i, file := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = FetchResult{Path: file.Path, Status: FetchFailed, Error: ctx.Err().Error()}
				return
			}
			defer func() { <-sem }()
			results[i] = f.one(ctx, file)
			f.report(results[i])
		}()
	}
	wg.Wait()
	var failed []FetchResult
	for _, r := range results {
		if r.Status == FetchFailed {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		return results, &FetchError{Failed: failed}
	}
	return results, nil
}

type fetcher struct {
	o FetchOptions

	mu            sync.Mutex
	sums          Sums
	checksumFiles map[string][]byte // published checksum files, by URL
}

func (f *fetcher) report(r FetchResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.o.Progress != nil {
		f.o.Progress(r)
	}
}

// one fetches a file unless the directory has it already.
func (f *fetcher) one(ctx context.Context, file File) FetchResult {
	dst := filepath.Join(f.o.Dir, filepath.FromSlash(file.Path))
	f.mu.Lock()
	known := f.sums[file.Path]
	f.mu.Unlock()
	if known != "" {
		if got, err := HashFile(ctx, dst); err == nil && got == known {
			st, _ := os.Stat(dst)
			return FetchResult{Path: file.Path, Status: FetchKept, Bytes: st.Size(), SHA256: got}
		}
	}
	res := FetchResult{Path: file.Path, Source: file.Upstream}
	var sum string
	var n int64
	var err error
	if file.Image != "" {
		res.Source = file.Image
		sum, n, err = f.pullImage(ctx, file, dst)
	} else {
		sum, n, err = f.download(ctx, file, dst)
	}
	if err != nil {
		res.Status, res.Error = FetchFailed, err.Error()
		return res
	}
	f.mu.Lock()
	f.sums[file.Path] = sum
	data := f.sums.Format()
	err = atomicfile.Write(filepath.Join(f.o.Dir, SumsFile), data, 0o644)
	f.mu.Unlock()
	if err != nil {
		res.Status, res.Error = FetchFailed, err.Error()
		return res
	}
	res.Status, res.Bytes, res.SHA256 = FetchFetched, n, sum
	return res
}

// download gets an upstream file into dst, checked against its pinned or
// published checksum; a file that does not match is deleted.
func (f *fetcher) download(ctx context.Context, file File, dst string) (string, int64, error) {
	want := file.SHA256
	if want == "" {
		if file.SumURL == "" {
			return "", 0, errors.New("no checksum is known or published for it; refusing to keep it")
		}
		var err error
		if want, err = f.publishedSum(ctx, file); err != nil {
			return "", 0, err
		}
	}
	tmp, err := f.tempFor(dst)
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := f.get(ctx, file.Upstream, io.MultiWriter(tmp, h))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != want {
		return "", 0, fmt.Errorf("%s does not match its SHA-256 (got %s, want %s); not kept", file.Upstream, got, want)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, err
	}
	return got, n, nil
}

// publishedSum reads the checksum a project publishes for a file: a
// ".sha256" file (the hash, optionally followed by the name) or a
// sha256sum list that names the file.
func (f *fetcher) publishedSum(ctx context.Context, file File) (string, error) {
	f.mu.Lock()
	body, ok := f.checksumFiles[file.SumURL]
	f.mu.Unlock()
	if !ok {
		var buf bytes.Buffer
		if _, err := f.get(ctx, file.SumURL, &limitedWriter{w: &buf, n: 1 << 20}); err != nil {
			return "", fmt.Errorf("checksum: %w", err)
		}
		body = buf.Bytes()
		f.mu.Lock()
		f.checksumFiles[file.SumURL] = body
		f.mu.Unlock()
	}
	base := path.Base(file.Upstream)
	sc := bufio.NewScanner(bytes.NewReader(body))
	var lines [][]string
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 {
			lines = append(lines, fields)
		}
	}
	for _, l := range lines {
		sum := strings.ToLower(l[0])
		if !ValidSHA256(sum) {
			continue
		}
		if len(lines) == 1 && len(l) == 1 {
			return sum, nil
		}
		if len(l) > 1 && strings.TrimPrefix(l[1], "*") == base {
			return sum, nil
		}
	}
	return "", fmt.Errorf("checksum: %s does not give the SHA-256 of %s", file.SumURL, base)
}

// get downloads url into w.
func (f *fetcher) get(ctx context.Context, url string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := f.o.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: HTTP %s", url, resp.Status)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: %w", url, err)
	}
	return n, nil
}

// pullImage pulls an image for the file's architecture and writes it as
// a docker-archive tarball tagged with its reference.
func (f *fetcher) pullImage(ctx context.Context, file File, dst string) (string, int64, error) {
	tag, err := name.NewTag(file.Image)
	if err != nil {
		return "", 0, err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: file.Arch})}
	if f.o.Client.Transport != nil {
		opts = append(opts, remote.WithTransport(f.o.Client.Transport))
	}
	img, err := remote.Image(tag, opts...)
	if err != nil {
		return "", 0, fmt.Errorf("pull %s: %w", file.Image, err)
	}
	tmp, err := f.tempFor(dst)
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	err = tarball.Write(tag, img, cw)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("pull %s: %w", file.Image, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

// tempFor opens a temporary file next to dst.
func (f *fetcher) tempFor(dst string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part*")
	if err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return tmp, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errors.New("checksum file too large")
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

// SortResults orders results by path.
func SortResults(rs []FetchResult) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Path < rs[j].Path })
}
