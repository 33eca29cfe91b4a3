// Command bench measures gatehouse against bare baselines in the same run.
//
//	bench run [-quick] [-out DIR]     the whole benchmark (make bench): starts its own
//	                                  database, authsvc, edgesvc and baseline servers
//	bench baseline-ws -listen ADDR    a bare gorilla/websocket echo server, no auth
//	bench baseline-grpc -listen ADDR  a bare gRPC ValidateSession over an in-memory map
//	bench baseline-broadcast -listen ADDR  a bare broadcast server (PreparedMessage loop)
//	bench consumer-echo -listen ADDR  a ConsumerService answering "You said: X"
//	bench baseline-proxy -listen ADDR -consumer ADDR  a bare WebSocket→gRPC proxy to it
//	bench hold ...                    a child that holds idle connections (run uses it)
//
// Servers run pinned to CPU 0 and the load generator to CPU 1 (taskset), as the
// figures in the performance issue were measured.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench run|baseline-ws|baseline-grpc|baseline-broadcast|consumer-echo|baseline-proxy|hold [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runBench(os.Args[2:])
	case "baseline-ws":
		err = baselineWS(os.Args[2:])
	case "baseline-grpc":
		err = baselineGRPC(os.Args[2:])
	case "baseline-broadcast":
		err = baselineBroadcast(os.Args[2:])
	case "consumer-echo":
		err = consumerEcho(os.Args[2:])
	case "baseline-proxy":
		err = baselineProxy(os.Args[2:])
	case "hold":
		err = hold(os.Args[2:])
	default:
		err = fmt.Errorf("unknown role %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
