//go:build linux

// Command standin plays, in the lab, the containers of kforge's AWS cloud
// integration, which need AWS and cannot run there (the lab has no
// instance metadata and no route to the emulator). What it does depends on
// the file /standin-mode of its image:
//
//   - "ccm": what the AWS cloud controller manager does to a new node that
//     the lab can check: it removes the taint
//     node.cloudprovider.kubernetes.io/uninitialized. It talks to the API
//     server with the pod's service account (in-cluster configuration), so
//     the cloud controller's RBAC, its placement on the control planes and
//     its tolerations are exercised for real.
//   - "serve:PORT": answers HTTP 200 on PORT, as the CSI livenessprobe
//     sidecar (9808) and node-driver-registrar (9809) do for the probes.
//   - anything else: waits for SIGTERM, as a CSI driver with nothing to do.
//
// Its arguments (the real component's flags) are ignored and logged; run
// with the argument pre-stop-hook (the EBS CSI node plugin's preStop hook)
// it exits at once.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
)

const uninitialized = "node.cloudprovider.kubernetes.io/uninitialized"

func main() {
	if slices.Contains(os.Args[1:], "pre-stop-hook") {
		return
	}
	mode, _ := os.ReadFile("/standin-mode")
	m := strings.TrimSpace(string(mode))
	log.Printf("kforge lab stand-in (%s), args %q", m, os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	port, serve := strings.CutPrefix(m, "serve:")
	switch {
	case m == "ccm":
		if err := initNodes(ctx); err != nil && ctx.Err() == nil {
			log.Fatal(err)
		}
	case serve:
		srv := &http.Server{Addr: ":" + port, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "ok")
		})}
		go func() { <-ctx.Done(); srv.Close() }()
		if err := srv.ListenAndServe(); err != nil && ctx.Err() == nil {
			log.Fatal(err)
		}
	default:
		<-ctx.Done()
	}
}

// initNodes removes the uninitialized taint from every node that has it,
// every two seconds, until ctx ends. It uses client-go's in-cluster
// configuration and transport (service account token, cluster CA) for
// plain requests to the nodes API.
func initNodes(ctx context.Context) error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	api := &nodesAPI{c: hc, base: strings.TrimRight(cfg.Host, "/") + "/api/v1/nodes"}
	for {
		nodes, err := api.list(ctx)
		if err != nil {
			log.Printf("list nodes: %v", err)
		}
		for _, n := range nodes {
			if err := api.initNode(ctx, n); err != nil {
				log.Printf("node %s: %v", n.Name, err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

type nodesAPI struct {
	c    *http.Client
	base string
}

func (a *nodesAPI) do(ctx context.Context, method, url, ctype string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (a *nodesAPI) list(ctx context.Context) ([]corev1.Node, error) {
	var l corev1.NodeList
	err := a.do(ctx, http.MethodGet, a.base, "", nil, &l)
	return l.Items, err
}

// initNode removes the taint from one node, with a merge patch of its
// taints guarded by its resource version.
func (a *nodesAPI) initNode(ctx context.Context, n corev1.Node) error {
	var keep []corev1.Taint
	found := false
	for _, t := range n.Spec.Taints {
		if t.Key == uninitialized {
			found = true
			continue
		}
		keep = append(keep, t)
	}
	if !found {
		return nil
	}
	if keep == nil {
		keep = []corev1.Taint{}
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": n.ResourceVersion},
		"spec":     map[string]any{"taints": keep},
	})
	if err != nil {
		return err
	}
	if err := a.do(ctx, http.MethodPatch, a.base+"/"+n.Name, "application/merge-patch+json", patch, nil); err != nil {
		return err
	}
	log.Printf("initialised node %s (provider ID %s)", n.Name, n.Spec.ProviderID)
	return nil
}
