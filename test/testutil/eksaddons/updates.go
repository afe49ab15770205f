package eksaddons

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The version updates the emulator lacks: UpdateClusterVersion,
// UpdateNodegroupVersion, UpdateAddon and DescribeUpdate, in the EKS API's
// REST-JSON shapes. An update is InProgress for the first Settle
// DescribeUpdate calls that see it, then Successful; only then does the
// cluster's or node group's version change, which the double writes into
// the emulator's DescribeCluster and DescribeNodegroup answers. The rules
// EKS applies are checked: a cluster goes up one minor at a time, a node
// group no further than its cluster, and a second update while one is in
// progress is refused.

var (
	updatesRE      = regexp.MustCompile(`^/clusters/([^/]+)/updates$`)
	updateRE       = regexp.MustCompile(`^/clusters/([^/]+)/updates/([^/]+)$`)
	ngVersionRE    = regexp.MustCompile(`^/clusters/([^/]+)/node-groups/([^/]+)/update-version$`)
	nodegroupRE    = regexp.MustCompile(`^/clusters/([^/]+)/node-groups/([^/]+)$`)
	addonUpdateRE  = regexp.MustCompile(`^/clusters/([^/]+)/addons/([^/]+)/update$`)
	createVersionQ = regexp.MustCompile(`"version"\s*:\s*"([^"]+)"`)
)

// Update is an update the double holds.
type Update struct {
	ID, Type, Status, Cluster, Nodegroup, Addon, Version, Token string
	Created                                                     time.Time
	describes                                                   int
}

func (u *Update) shape() map[string]any {
	param := "Version"
	if u.Type == "AddonUpdate" {
		param = "AddonVersion"
	}
	return map[string]any{"update": map[string]any{
		"id": u.ID, "status": u.Status, "type": u.Type, "createdAt": float64(u.Created.Unix()),
		"params": []map[string]string{{"type": param, "value": u.Version}}, "errors": []any{},
	}}
}

// updates serves the update routes; it reports whether it served r.
func (d *Double) updates(w http.ResponseWriter, r *http.Request, region, path string) bool {
	switch {
	case r.Method == http.MethodPost && updatesRE.MatchString(path):
		cluster := updatesRE.FindStringSubmatch(path)[1]
		d.record("UpdateClusterVersion", region, cluster)
		d.startUpdate(w, r, region, cluster, "", "")
	case r.Method == http.MethodPost && ngVersionRE.MatchString(path):
		sm := ngVersionRE.FindStringSubmatch(path)
		d.record("UpdateNodegroupVersion", region, sm[1])
		d.startUpdate(w, r, region, sm[1], sm[2], "")
	case r.Method == http.MethodPost && addonUpdateRE.MatchString(path):
		sm := addonUpdateRE.FindStringSubmatch(path)
		d.record("UpdateAddon", region, sm[1])
		d.startUpdate(w, r, region, sm[1], "", sm[2])
	case r.Method == http.MethodGet && updateRE.MatchString(path):
		sm := updateRE.FindStringSubmatch(path)
		d.record("DescribeUpdate", region, sm[1])
		d.describeUpdate(w, region, sm[1], sm[2])
	case r.Method == http.MethodGet && clusterRE.MatchString(path):
		k := key(region, clusterRE.FindStringSubmatch(path)[1], "")
		d.mu.Lock()
		set := map[string]any{}
		if v, ok := d.versionsOf[k]; ok {
			set["version"] = v
		}
		if c, ok := d.access[k]; ok {
			set["accessConfig"] = c.shape()
		}
		d.mu.Unlock()
		d.patch(w, r, "cluster", set)
	case r.Method == http.MethodGet && nodegroupRE.MatchString(path):
		sm := nodegroupRE.FindStringSubmatch(path)
		d.mu.Lock()
		set := map[string]any{}
		if v, ok := d.versionsOf[key(region, sm[1], "ng:"+sm[2])]; ok {
			set["version"] = v
		}
		d.mu.Unlock()
		d.patch(w, r, "nodegroup", set)
	default:
		return false
	}
	return true
}

// rememberCreate records the version a CreateCluster asked for (the
// emulator's answers are patched with later versions). A node group's
// version is the emulator's until an update changes it.
func (d *Double) rememberCreate(region, cluster string, body []byte) {
	m := createVersionQ.FindSubmatch(body)
	if m == nil {
		return
	}
	d.mu.Lock()
	d.versionsOf[key(region, cluster, "")] = string(m[1])
	d.mu.Unlock()
}

func minor(v string) int {
	_, rest, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	rest, _, _ = strings.Cut(rest, ".")
	n, err := strconv.Atoi(rest)
	if err != nil {
		return -1
	}
	return n
}

func (d *Double) startUpdate(w http.ResponseWriter, r *http.Request, region, cluster, nodegroup, addon string) {
	body, _ := io.ReadAll(r.Body)
	var in struct {
		Version            string `json:"version"`
		AddonVersion       string `json:"addonVersion"`
		ClientRequestToken string `json:"clientRequestToken"`
	}
	if !d.decodeFor(w, body, &in, region, cluster) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range d.updateList {
		if u.Token != "" && u.Token == in.ClientRequestToken && u.Cluster == key(region, cluster, "") {
			reply(w, u.shape()) // the same request again: the same update
			return
		}
	}
	for _, u := range d.updateList {
		if u.Cluster == key(region, cluster, "") && u.Nodegroup == nodegroup && u.Addon == addon && u.Status == "InProgress" {
			fail(w, 409, "ResourceInUseException", "An update is already in progress.")
			return
		}
	}
	clusterVersion := d.versionsOf[key(region, cluster, "")]
	u := &Update{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", len(d.updateList)+1, time.Now().UnixNano()&0xffffffffffff),
		Status: "InProgress", Cluster: key(region, cluster, ""), Nodegroup: nodegroup, Addon: addon, Version: in.Version,
		Token: in.ClientRequestToken, Created: time.Now().UTC().Truncate(time.Second)}
	switch {
	case addon != "":
		a := d.addons[key(region, cluster, addon)]
		if a == nil {
			fail(w, 404, "ResourceNotFoundException", "No addon: %s found in cluster: %s", addon, cluster)
			return
		}
		u.Type, u.Version = "AddonUpdate", in.AddonVersion
	case nodegroup != "":
		if minor(in.Version) > minor(clusterVersion) {
			fail(w, 400, "InvalidParameterException", "Requested Nodegroup Kubernetes version %s is greater than the cluster's, %s.", in.Version, clusterVersion)
			return
		}
		u.Type = "VersionUpdate"
	default:
		if minor(in.Version) != minor(clusterVersion)+1 {
			fail(w, 400, "InvalidParameterException", "Unsupported Kubernetes minor version update from %s to %s", clusterVersion, in.Version)
			return
		}
		u.Type = "VersionUpdate"
	}
	d.updateList = append(d.updateList, u)
	reply(w, u.shape())
}

func (d *Double) describeUpdate(w http.ResponseWriter, region, cluster, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range d.updateList {
		if u.ID != id || u.Cluster != key(region, cluster, "") {
			continue
		}
		u.describes++
		if u.Status == "InProgress" && u.describes > d.Settle {
			u.Status = "Successful"
			switch {
			case u.Addon != "":
				if a := d.addons[key(region, cluster, u.Addon)]; a != nil {
					a.Version = u.Version
				}
			case u.Nodegroup != "":
				d.versionsOf[key(region, cluster, "ng:"+u.Nodegroup)] = u.Version
			default:
				d.versionsOf[key(region, cluster, "")] = u.Version
			}
		}
		reply(w, u.shape())
		return
	}
	fail(w, 404, "ResourceNotFoundException", "No update found for ID: %s", id)
}

// patch passes a describe to the emulator and sets fields of its
// answer's object (cluster or nodegroup) to what the double holds.
func (d *Double) patch(w http.ResponseWriter, r *http.Request, object string, set map[string]any) {
	if len(set) == 0 {
		d.next.ServeHTTP(w, r)
		return
	}
	rec := httptestRecorder(d.next, r)
	var out map[string]map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out[object] == nil {
		copyResponse(w, rec)
		return
	}
	for k, v := range set {
		out[object][k] = v
	}
	reply(w, out)
}

// Updates returns the update operations served for a cluster, with what
// each was for, in order ("UpdateNodegroupVersion demo-workers 1.34").
func (d *Double) Updates(region, cluster string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, u := range d.updateList {
		if u.Cluster != key(region, cluster, "") {
			continue
		}
		switch {
		case u.Addon != "":
			out = append(out, "UpdateAddon "+u.Addon+" "+u.Version)
		case u.Nodegroup != "":
			out = append(out, "UpdateNodegroupVersion "+u.Nodegroup+" "+u.Version)
		default:
			out = append(out, "UpdateClusterVersion "+u.Version)
		}
	}
	return out
}
