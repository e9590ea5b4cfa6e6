// Command etcd is the etcd server at the version Kubernetes pins, built from
// the Go module proxy (the etcd root module has local replace directives, so
// its own main package cannot be installed directly).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
