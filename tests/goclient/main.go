// goclient reads lagscaler's external metrics API with the HPA's own client
// (k8s.io/metrics/pkg/client/external_metrics) and client-go's discovery client,
// configured like kube-controller-manager's (protobuf preferred), and prints what
// it got as JSON for the Python tests to assert on.
//
// With --quantities it reads one quantity per line from stdin instead and prints,
// per line, what k8s.io/apimachinery/pkg/api/resource makes of it (ParseQuantity,
// Quantity.String, Quantity.MilliValue, the exact value), so the tests can hold
// lagscaler.quantity to upstream's behaviour.
//
// In a cluster the aggregator adds the front-proxy client certificate and the
// X-Remote-* headers; called directly, this program presents the front-proxy
// certificate itself and sets the headers with a WrapTransport.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/metrics/pkg/client/external_metrics"
)

type groups []string

func (g *groups) String() string     { return strings.Join(*g, ",") }
func (g *groups) Set(v string) error { *g = append(*g, v); return nil }

// headerTransport plays the aggregator: it adds the user headers and remembers
// the Accept header client-go sent, so the test can see what was negotiated.
type headerTransport struct {
	next   http.RoundTripper
	user   string
	groups []string
	mu     sync.Mutex
	accept []string
}

func (t *headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if t.user != "" {
		req.Header.Set("X-Remote-User", t.user)
		for _, g := range t.groups {
			req.Header.Add("X-Remote-Group", g)
		}
	}
	t.mu.Lock()
	t.accept = append(t.accept, req.Header.Get("Accept"))
	t.mu.Unlock()
	return t.next.RoundTrip(req)
}

type item struct {
	MetricName   string            `json:"metricName"`
	MetricLabels map[string]string `json:"metricLabels"`
	Value        string            `json:"value"`
	MilliValue   int64             `json:"milliValue"`
	Timestamp    string            `json:"timestamp"`
	Window       *int64            `json:"window,omitempty"`
}

type output struct {
	Resources []string `json:"resources,omitempty"`
	Items     []item   `json:"items"`
	Accept    []string `json:"accept"`
	Error     string   `json:"error,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	Code      int32    `json:"code,omitempty"`
}

// parsed is what upstream makes of one quantity string.
type parsed struct {
	Input     string `json:"input"`
	String    string `json:"string,omitempty"`
	Canonical string `json:"canonical,omitempty"`
	Milli     int64  `json:"milli"`
	Exact     string `json:"exact,omitempty"`
	Error     string `json:"error,omitempty"`
}

// quantities answers --quantities: one JSON object per stdin line. String is what
// the parsed quantity prints (it keeps the input's format); Canonical is how the
// same value prints as a DecimalSI quantity built from it (NewDecimalQuantity),
// which is how an API server writes a value it computed.
func quantities() int {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		text := in.Text()
		result := parsed{Input: text}
		if q, err := resource.ParseQuantity(text); err != nil {
			result.Error = err.Error()
		} else {
			result.String = q.String()
			result.Milli = q.MilliValue()
			exact := q.AsDec()
			result.Exact = exact.String()
			result.Canonical = resource.NewDecimalQuantity(*exact, resource.DecimalSI).String()
		}
		if err := out.Encode(result); err != nil {
			return 1
		}
	}
	if in.Err() != nil {
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--quantities" {
		os.Exit(quantities())
	}
	server := flag.String("server", "", "https://host:port of lagscaler")
	ca := flag.String("ca", "", "CA bundle that signed lagscaler's serving certificate")
	cert := flag.String("cert", "", "client certificate (the front-proxy one)")
	key := flag.String("key", "", "client key")
	user := flag.String("user", "", "X-Remote-User to send")
	var gs groups
	flag.Var(&gs, "group", "X-Remote-Group to send (repeatable)")
	namespace := flag.String("namespace", "default", "namespace of the metric")
	metric := flag.String("metric", "", "external metric name")
	selector := flag.String("selector", "", "label selector")
	discover := flag.Bool("discovery", false, "also list the group-version's resources")
	flag.Parse()

	transport := &headerTransport{user: *user, groups: gs}
	cfg := &rest.Config{
		Host: *server,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   *ca,
			CertFile: *cert,
			KeyFile:  *key,
		},
		// kube-controller-manager talks protobuf (--kube-api-content-type default).
		ContentConfig: rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf"},
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			transport.next = rt
			return transport
		},
	}
	out := output{Items: []item{}}
	code := 0
	fail := func(err error) {
		out.Error = err.Error()
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			out.Reason = string(status.Status().Reason)
			out.Code = status.Status().Code
		}
		code = 3
	}

	if *discover {
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			fail(err)
		} else if list, err := dc.ServerResourcesForGroupVersion("external.metrics.k8s.io/v1beta1"); err != nil {
			fail(err)
		} else {
			for _, r := range list.APIResources {
				out.Resources = append(out.Resources, r.Name)
			}
		}
	}
	if code == 0 && *metric != "" {
		sel, err := labels.Parse(*selector)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad selector:", err)
			os.Exit(2)
		}
		client, err := external_metrics.NewForConfig(cfg)
		if err != nil {
			fail(err)
		} else if list, err := client.NamespacedMetrics(*namespace).List(*metric, sel); err != nil {
			fail(err)
		} else {
			for _, v := range list.Items {
				out.Items = append(out.Items, item{
					MetricName:   v.MetricName,
					MetricLabels: v.MetricLabels,
					Value:        v.Value.String(),
					MilliValue:   v.Value.MilliValue(),
					Timestamp:    v.Timestamp.UTC().Format("2006-01-02T15:04:05Z"),
					Window:       v.WindowSeconds,
				})
			}
		}
	}
	transport.mu.Lock()
	out.Accept = transport.accept
	transport.mu.Unlock()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
	os.Exit(code)
}
