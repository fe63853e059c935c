#!/usr/bin/env bash
# bench/router.sh — throughput of the Paddock router against nginx and
# against no proxy at all, on this machine, in one run.
#
# Builds bench/backend (a Go server answering 1 KiB) and bench/routerbench
# (router.Run with a table for bench.localhost), starts nginx as a reverse
# proxy with upstream keepalive 64 that sets the same request fields as the
# router (X-Forwarded-For/-Proto/-Host, X-Request-Id), then runs wrk (-t2 -c64 -d10s by
# default) against: the backend directly, the router, nginx, and (unless
# -s) the router's HTTPS listener and nginx with ssl, both with ECDSA P-256
# certificates from one platform CA made for the run (tlsca). Everything
# listens on 127.0.0.1 on ports chosen at run time and is stopped by PID at
# exit. Installs nginx and wrk with apt-get if they are missing.
#
# Usage: bench/router.sh [-d DURATION] [-c CONNECTIONS] [-t THREADS] [-r ROUNDS] [-s]
#   ROUNDS > 1 repeats the measurements in rotating order and prints each
#   round (the machine is shared: figures move between runs); -s skips the
#   HTTPS rows.
set -euo pipefail

duration=10s conns=64 threads=2 rounds=1 tls=1
while getopts "d:c:t:r:s" opt; do
	case $opt in
	d) duration=$OPTARG ;;
	c) conns=$OPTARG ;;
	t) threads=$OPTARG ;;
	r) rounds=$OPTARG ;;
	s) tls= ;;
	*) echo "usage: $0 [-d DURATION] [-c CONNECTIONS] [-t THREADS] [-r ROUNDS] [-s]" >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/paddock-router-bench.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

need() { # need CMD PACKAGE
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2" >&2
	if [ -z "${apt_updated:-}" ]; then
		apt-get update -qq >&2
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}
need wrk wrk
[ -x /usr/sbin/nginx ] || need nginx nginx
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

wait_file() { # wait_file PATH: until it exists and is not empty (5 s)
	for _ in $(seq 1 500); do
		[ -s "$1" ] && return 0
		sleep 0.01
	done
	echo "timed out waiting for $1" >&2
	exit 1
}

echo "building into $work" >&2
(cd "$root" && go build -o "$work/backend" ./bench/backend && go build -o "$work/routerbench" ./bench/routerbench)

"$work/backend" -addr 127.0.0.1:0 -addr-file "$work/backend.addr" &
pids+=($!)
wait_file "$work/backend.addr"
backend=$(cat "$work/backend.addr")

mkdir -p "$work/nginx"
tls_flags=()
if [ -n "$tls" ]; then
	# One CA for both proxies; HTTPS clients connect to "localhost" (it
	# resolves, and wrk sends the URL's host as SNI).
	"$work/routerbench" cert "$work/ca" "$work/nginx" localhost bench.localhost
	tls_flags=(-ca-dir "$work/ca" -tls-addr-file "$work/router-tls.addr")
fi
"$work/routerbench" -backend "$backend" -state "$work/router" -addr-file "$work/router.addr" "${tls_flags[@]}" &
router_pid=$!
pids+=($router_pid)
wait_file "$work/router.addr"
router=$(cat "$work/router.addr")

read -r nginx_port nginx_tls_port < <("$work/routerbench" freeport 2 | paste -sd ' ')
nginx_tls_server=
if [ -n "$tls" ]; then
	router_tls_port=$(cut -d: -f2 "$work/router-tls.addr")
	nginx_tls_server="
    server {
        listen 127.0.0.1:$nginx_tls_port ssl;
        ssl_certificate $work/nginx/cert.pem;
        ssl_certificate_key $work/nginx/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256; # what Go picks on AES hardware
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
        }
    }"
fi
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream app {
        server $backend;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        server_name bench.localhost;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
        }
    }$nginx_tls_server
}
CONF
"$nginx_bin" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=($nginx_pid)
for _ in $(seq 1 500); do
	curl -fsS -o /dev/null -H 'Host: bench.localhost' "http://127.0.0.1:$nginx_port/" 2>/dev/null && break
	sleep 0.01
done

targets=(direct router nginx)
declare -A urls=([direct]="http://$backend/" [router]="http://$router/" [nginx]="http://127.0.0.1:$nginx_port/")
declare -A procs=([direct]="" [router]="$router_pid" [nginx]="$nginx_pid")
if [ -n "$tls" ]; then
	targets+=(router-tls nginx-tls)
	urls+=([router-tls]="https://localhost:$router_tls_port/" [nginx-tls]="https://localhost:$nginx_tls_port/")
	procs+=([router-tls]="$router_pid" [nginx-tls]="$nginx_pid")
fi

# Check that each target answers 200 with the 1 KiB body (over HTTPS, with
# a certificate the run's CA signed for the name).
for t in "${targets[@]}"; do
	size=$(curl -fsS ${tls:+--cacert "$work/ca/ca.crt"} -o /dev/null -w '%{size_download}' -H 'Host: bench.localhost' "${urls[$t]}")
	[ "$size" = 1024 ] || { echo "${urls[$t]} answered $size bytes, want 1024" >&2; exit 1; }
done

# cpu_ticks PID...: user+system CPU ticks of the processes and their children
cpu_ticks() {
	local total=0 pid kids
	for pid in "$@"; do
		kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
		for p in $pid $kids; do
			total=$((total + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0)))
		done
	done
	echo "$total"
}

# measure NAME URL PID: prints "req/s p50 p99 cpu-us/req" and keeps them in
# $work/NAME.$round; PID is the proxy whose CPU time is counted (none for direct).
measure() {
	local out c0=0 c1=0
	[ -n "${3:-}" ] && c0=$(cpu_ticks "$3")
	out=$(wrk -t"$threads" -c"$conns" -d"$duration" --latency -H 'Host: bench.localhost' "$2")
	[ -n "${3:-}" ] && c1=$(cpu_ticks "$3")
	if grep -q -E 'Non-2xx|Socket errors' <<<"$out"; then
		echo "$1: wrk reported errors:" >&2
		echo "$out" >&2
	fi
	local rps p50 p99 n us=-
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
	p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
	n=$(awk '/requests in/ {print $1}' <<<"$out")
	if [ -n "${3:-}" ] && [ -n "$n" ] && [ "$n" -gt 0 ]; then
		us=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
	fi
	echo "$rps $p50 $p99 $us" >"$work/$1.$round"
}

echo "wrk -t$threads -c$conns -d$duration, 1 KiB responses, all on 127.0.0.1 ($(nproc) cores)"
printf '%-6s %-10s %12s %10s %10s %14s\n' round target "req/s" p50 p99 "proxy-cpu/req"
nt=${#targets[@]}
for round in $(seq 1 "$rounds"); do
	for i in $(seq 0 $((nt - 1))); do
		t=${targets[$(((i + round - 1) % nt))]}
		measure "$t" "${urls[$t]}" "${procs[$t]}"
		read -r rps p50 p99 us <"$work/$t.$round"
		[ "$us" = - ] || us="${us}us"
		printf '%-6s %-10s %12s %10s %10s %14s\n' "$round" "$t" "$rps" "$p50" "$p99" "$us"
	done
	read -r d _ <"$work/direct.$round"
	read -r r _ <"$work/router.$round"
	read -r n _ <"$work/nginx.$round"
	awk -v d="$d" -v r="$r" -v n="$n" -v round="$round" 'BEGIN { printf "%-6s ratios: router/nginx %.2f  router/direct %.2f  nginx/direct %.2f\n", round, r/n, r/d, n/d }'
	if [ -n "$tls" ]; then
		read -r rt _ <"$work/router-tls.$round"
		read -r nt_ _ <"$work/nginx-tls.$round"
		awk -v r="$rt" -v n="$nt_" -v round="$round" 'BEGIN { printf "%-6s ratios: router-tls/nginx-tls %.2f\n", round, r/n }'
	fi
done
