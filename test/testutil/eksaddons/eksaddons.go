// Package eksaddons is a test double of the EKS APIs the AWS emulator
// (moto 5.2) lacks: the add-ons (CreateAddon, DescribeAddon, ListAddons,
// DeleteAddon and DescribeAddonVersions), the version updates
// (updates.go), and the cluster access configuration with the access
// entries EKS makes from it (accessentries.go), in the REST-JSON shapes of
// the EKS API. It stands in front of the emulator as an http.Handler: it
// answers those routes itself, patches the emulator's DescribeCluster
// answers with what it holds, and passes every other request on. What it
// holds for a cluster needs the cluster to exist in the emulator, and
// goes when the cluster is deleted.
package eksaddons

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Catalogue: the versions the double offers, newest first, and which is
// EKS's default for each Kubernetes minor. coredns's default is not its
// newest, so that a client that takes the newest is caught.
var catalogue = map[string][]version{
	"vpc-cni": {
		{"v1.20.1-eksbuild.1", map[string]bool{"1.31": false, "1.32": false, "1.33": false, "1.34": true}},
		{"v1.19.6-eksbuild.1", map[string]bool{"1.30": true, "1.31": true, "1.32": true, "1.33": true}},
	},
	"kube-proxy": {
		{"v1.34.1-eksbuild.2", map[string]bool{"1.34": true}},
		{"v1.33.3-eksbuild.4", map[string]bool{"1.33": true}},
		{"v1.32.6-eksbuild.8", map[string]bool{"1.32": true}},
		{"v1.31.10-eksbuild.8", map[string]bool{"1.31": true}},
		{"v1.30.14-eksbuild.2", map[string]bool{"1.30": true}},
	},
	"coredns": {
		{"v1.12.3-eksbuild.1", map[string]bool{"1.32": false, "1.33": false, "1.34": true}},
		{"v1.12.1-eksbuild.2", map[string]bool{"1.31": true, "1.32": true, "1.33": true}},
		{"v1.11.4-eksbuild.14", map[string]bool{"1.30": true, "1.31": false}},
	},
	"aws-ebs-csi-driver": {
		{"v1.48.0-eksbuild.2", map[string]bool{"1.30": true, "1.31": true, "1.32": true, "1.33": true, "1.34": true}},
		{"v1.47.0-eksbuild.1", map[string]bool{"1.30": false, "1.31": false, "1.32": false, "1.33": false}},
	},
}

type version struct {
	name   string
	minors map[string]bool // Kubernetes minor -> default
}

// DefaultVersion is the version the catalogue marks as EKS's default for
// add-on name on Kubernetes minor k8s ("" if none).
func DefaultVersion(name, k8s string) string {
	for _, v := range catalogue[name] {
		if v.minors[k8s] {
			return v.name
		}
	}
	return ""
}

// Addon is an add-on the double holds.
type Addon struct {
	Name, Cluster, Version, Status, ARN string
	Token                               string
	Tags                                map[string]string
	Created                             time.Time
	// describes counts the DescribeAddon calls that saw it settling.
	describes int
	issue     string
}

// Double is the add-on API in front of next (the emulator).
type Double struct {
	next http.Handler
	// Settle is how many DescribeAddon calls an add-on stays CREATING or
	// DELETING for.
	Settle int

	mu       sync.Mutex
	addons   map[string]*Addon // region/cluster/name
	clusters map[string]bool   // region/cluster, as the emulator made them
	calls    []call
	// versionsOf holds the Kubernetes version of each cluster
	// (region/cluster/) and node group (region/cluster/ng:name), as
	// created and then updated.
	versionsOf map[string]string
	updateList []*Update
	// access holds each cluster's access configuration (region/cluster/),
	// entries its access entries (region/cluster/principal ARN).
	access  map[string]AccessConfig
	entries map[string]*AccessEntry
}

// New returns the double, passing what it does not serve to next.
func New(next http.Handler) *Double {
	return &Double{next: next, Settle: 1, addons: map[string]*Addon{}, clusters: map[string]bool{}, versionsOf: map[string]string{},
		access: map[string]AccessConfig{}, entries: map[string]*AccessEntry{}}
}

var (
	scopeRE    = regexp.MustCompile(`Credential=[^/]+/[0-9]+/([^/]+)/([^/]+)/aws4_request`)
	clustersRE = regexp.MustCompile(`^/clusters$`)
	clusterRE  = regexp.MustCompile(`^/clusters/([^/]+)$`)
	addonsRE   = regexp.MustCompile(`^/clusters/([^/]+)/addons$`)
	addonRE    = regexp.MustCompile(`^/clusters/([^/]+)/addons/([^/]+)$`)
	versionsRE = regexp.MustCompile(`^/addons/supported-versions$`)
)

func key(region, cluster, name string) string { return region + "/" + cluster + "/" + name }

// Addons returns the add-ons of a cluster, by name.
func (d *Double) Addons(region, cluster string) map[string]Addon {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]Addon{}
	for k, a := range d.addons {
		if strings.HasPrefix(k, region+"/"+cluster+"/") {
			out[a.Name] = *a
		}
	}
	return out
}

// Calls returns the add-on operations served for a cluster (and its
// DeleteCluster calls passed on), in order.
func (d *Double) Calls(region, cluster string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, c := range d.calls {
		if c.cluster == region+"/"+cluster {
			out = append(out, c.op)
		}
	}
	return out
}

// Degrade makes an add-on DEGRADED with a health issue.
func (d *Double) Degrade(region, cluster, name, issue string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a := d.addons[key(region, cluster, name)]; a != nil {
		a.Status, a.issue = "DEGRADED", issue
	}
}

// ServeHTTP implements http.Handler.
func (d *Double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := scopeRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil || m[2] != "eks" {
		d.next.ServeHTTP(w, r)
		return
	}
	region, path := m[1], r.URL.Path
	if d.updates(w, r, region, path) || d.accessEntries(w, r, region) {
		return
	}
	switch {
	case r.Method == http.MethodGet && versionsRE.MatchString(path):
		d.record("DescribeAddonVersions", region, "")
		d.versions(w, r)
	case r.Method == http.MethodPost && addonsRE.MatchString(path):
		cluster := addonsRE.FindStringSubmatch(path)[1]
		d.record("CreateAddon", region, cluster)
		d.create(w, r, region, cluster)
	case r.Method == http.MethodGet && addonsRE.MatchString(path):
		cluster := addonsRE.FindStringSubmatch(path)[1]
		d.record("ListAddons", region, cluster)
		d.list(w, region, cluster)
	case r.Method == http.MethodGet && addonRE.MatchString(path):
		sm := addonRE.FindStringSubmatch(path)
		d.record("DescribeAddon", region, sm[1])
		d.describe(w, region, sm[1], sm[2])
	case r.Method == http.MethodDelete && addonRE.MatchString(path):
		sm := addonRE.FindStringSubmatch(path)
		d.record("DeleteAddon", region, sm[1])
		d.delete(w, region, sm[1], sm[2])
	case r.Method == http.MethodPost && clustersRE.MatchString(path):
		// CreateCluster: the emulator's answer names the cluster. What the
		// double keeps of it is kept before the client has the answer.
		body := readBody(r)
		rec := httptestRecorder(d.next, r)
		defer copyResponse(w, rec)
		var out struct {
			Cluster struct {
				Name string `json:"name"`
				ARN  string `json:"arn"`
			} `json:"cluster"`
		}
		if rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &out) == nil && out.Cluster.Name != "" {
			d.mu.Lock()
			d.clusters[region+"/"+out.Cluster.Name] = true
			d.mu.Unlock()
			d.rememberCreate(region, out.Cluster.Name, body)
			d.rememberAccess(r, region, out.Cluster.Name, out.Cluster.ARN, body)
		}
	case r.Method == http.MethodDelete && clusterRE.MatchString(path):
		d.record("DeleteCluster", region, clusterRE.FindStringSubmatch(path)[1])
		if rec := d.pass(w, r); rec.Code == http.StatusOK {
			d.dropCluster(region, clusterRE.FindStringSubmatch(path)[1])
		}
	default:
		d.next.ServeHTTP(w, r)
	}
}

// pass forwards r to the emulator, copies the answer to w and returns it.
func (d *Double) pass(w http.ResponseWriter, r *http.Request) *httptest.ResponseRecorder {
	rec := httptestRecorder(d.next, r)
	copyResponse(w, rec)
	return rec
}

// httptestRecorder serves r with next into a recorder.
func httptestRecorder(next http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	return rec
}

// copyResponse writes a recorded answer to w.
func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// readBody reads r's body and puts it back for the next handler.
func readBody(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

func (d *Double) record(op, region, cluster string) {
	d.mu.Lock()
	d.calls = append(d.calls, call{op, region + "/" + cluster})
	d.mu.Unlock()
}

type call struct{ op, cluster string }

func (d *Double) dropCluster(region, cluster string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.addons {
		if strings.HasPrefix(k, region+"/"+cluster+"/") {
			delete(d.addons, k)
		}
	}
	for k := range d.entries {
		if strings.HasPrefix(k, region+"/"+cluster+"/") {
			delete(d.entries, k)
		}
	}
	delete(d.access, key(region, cluster, ""))
	delete(d.clusters, region+"/"+cluster)
}

// fail answers an EKS error in the REST-JSON shape.
func fail(w http.ResponseWriter, status int, code, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": fmt.Sprintf(format, args...)})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (d *Double) versions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	k8s, only := q.Get("kubernetesVersion"), q.Get("addonName")
	names := make([]string, 0, len(catalogue))
	for n := range catalogue {
		if only == "" || n == only {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var addons []map[string]any
	for _, n := range names {
		var vs []map[string]any
		for _, v := range catalogue[n] {
			var compat []map[string]any
			for minor, def := range v.minors {
				if k8s == "" || minor == k8s {
					compat = append(compat, map[string]any{"clusterVersion": minor, "platformVersions": []string{"*"}, "defaultVersion": def})
				}
			}
			if len(compat) == 0 {
				continue
			}
			sort.Slice(compat, func(i, j int) bool {
				return compat[i]["clusterVersion"].(string) < compat[j]["clusterVersion"].(string)
			})
			vs = append(vs, map[string]any{"addonVersion": v.name, "architecture": []string{"amd64", "arm64"},
				"compatibilities": compat, "requiresConfiguration": false})
		}
		addons = append(addons, map[string]any{"addonName": n, "type": "networking", "addonVersions": vs})
	}
	reply(w, map[string]any{"addons": addons})
}

// clusterExists reports whether the emulator made the cluster (seen
// passing through) and has not deleted it.
func (d *Double) clusterExists(region, cluster string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clusters[region+"/"+cluster]
}

// decodeFor decodes a request body into in and checks that its cluster
// exists, answering the EKS error itself (false) when not.
func (d *Double) decodeFor(w http.ResponseWriter, body []byte, in any, region, cluster string) bool {
	if err := json.Unmarshal(body, in); err != nil {
		fail(w, 400, "InvalidParameterException", "body: %v", err)
		return false
	}
	if !d.clusterExists(region, cluster) {
		fail(w, 404, "ResourceNotFoundException", "No cluster found for name: %s.", cluster)
		return false
	}
	return true
}

func (d *Double) create(w http.ResponseWriter, r *http.Request, region, cluster string) {
	body, _ := io.ReadAll(r.Body)
	var in struct {
		AddonName          string            `json:"addonName"`
		AddonVersion       string            `json:"addonVersion"`
		ClientRequestToken string            `json:"clientRequestToken"`
		Tags               map[string]string `json:"tags"`
	}
	if !d.decodeFor(w, body, &in, region, cluster) {
		return
	}
	vs, ok := catalogue[in.AddonName]
	if !ok {
		fail(w, 400, "InvalidParameterException", "Addon %s specified is not supported", in.AddonName)
		return
	}
	if in.AddonVersion == "" {
		in.AddonVersion = vs[0].name
	}
	known := false
	for _, v := range vs {
		known = known || v.name == in.AddonVersion
	}
	if !known {
		fail(w, 400, "InvalidParameterException", "Addon version %s specified is not supported", in.AddonVersion)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	k := key(region, cluster, in.AddonName)
	if a := d.addons[k]; a != nil {
		if in.ClientRequestToken != "" && a.Token == in.ClientRequestToken {
			reply(w, map[string]any{"addon": a.shape()})
			return
		}
		fail(w, 409, "ResourceInUseException", "Addon already exists.")
		return
	}
	a := &Addon{Name: in.AddonName, Cluster: cluster, Version: in.AddonVersion, Status: "CREATING", Token: in.ClientRequestToken,
		Tags: in.Tags, Created: time.Now().UTC().Truncate(time.Second),
		ARN: fmt.Sprintf("arn:aws:eks:%s:123456789012:addon/%s/%s/%d", region, cluster, in.AddonName, time.Now().UnixNano())}
	d.addons[k] = a
	reply(w, map[string]any{"addon": a.shape()})
}

func (d *Double) list(w http.ResponseWriter, region, cluster string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := []string{}
	for k, a := range d.addons {
		if strings.HasPrefix(k, region+"/"+cluster+"/") {
			names = append(names, a.Name)
		}
	}
	sort.Strings(names)
	reply(w, map[string]any{"addons": names})
}

func (d *Double) describe(w http.ResponseWriter, region, cluster, name string) {
	d.mu.Lock()
	k := key(region, cluster, name)
	a := d.addons[k]
	if a != nil && (a.Status == "CREATING" || a.Status == "DELETING") {
		a.describes++
		if a.describes > d.Settle {
			a.describes = 0
			if a.Status == "DELETING" {
				delete(d.addons, k)
				a = nil
			} else {
				a.Status = "ACTIVE"
			}
		}
	}
	var shape map[string]any
	if a != nil {
		shape = a.shape()
	}
	d.mu.Unlock()
	if a == nil {
		if !d.clusterExists(region, cluster) {
			fail(w, 404, "ResourceNotFoundException", "No cluster found for name: %s.", cluster)
			return
		}
		fail(w, 404, "ResourceNotFoundException", "No addon: %s found in cluster: %s", name, cluster)
		return
	}
	reply(w, map[string]any{"addon": shape})
}

func (d *Double) delete(w http.ResponseWriter, region, cluster, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.addons[key(region, cluster, name)]
	if a == nil {
		fail(w, 404, "ResourceNotFoundException", "No addon: %s found in cluster: %s", name, cluster)
		return
	}
	a.Status, a.describes = "DELETING", 0
	reply(w, map[string]any{"addon": a.shape()})
}

// shape is the add-on as the EKS API describes it.
func (a *Addon) shape() map[string]any {
	issues := []map[string]any{}
	if a.issue != "" {
		issues = append(issues, map[string]any{"code": "InsufficientNumberOfReplicas", "message": a.issue, "resourceIds": []string{}})
	}
	tags := a.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return map[string]any{
		"addonName": a.Name, "clusterName": a.Cluster, "status": a.Status, "addonVersion": a.Version, "addonArn": a.ARN,
		"createdAt": a.Created.Unix(), "modifiedAt": a.Created.Unix(), "health": map[string]any{"issues": issues}, "tags": tags,
	}
}
