import subprocess, time, sys
cmd = ["/tmp/hnswmem-rel4/jvdb", "--data", "/tmp/hnswmem-d1m/pristine", "search", "d", "--query-file", "/tmp/hnswmem-d1m/q.fvecs", "--index", "--ef", "64", "--json"]
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"JVDB_LOG": "info", "PATH": "/usr/bin:/bin"})
samples = []
while p.poll() is None:
    try:
        st = open("/proc/%d/status" % p.pid).read()
        d = {l.split(":")[0]: l.split(":")[1].strip() for l in st.splitlines() if ":" in l}
        samples.append((time.monotonic(), int(d["VmRSS"].split()[0]), int(d.get("RssAnon", "0 kB").split()[0]), int(d.get("RssFile", "0 kB").split()[0])))
    except Exception:
        pass
    time.sleep(0.005)
err = p.stderr.read().decode()
print([l for l in err.splitlines() if "loaded" in l])
peak = max(samples, key=lambda s: s[1])
print("samples", len(samples), "peak VmRSS MiB %.0f (anon %.0f file %.0f)" % (peak[1]/1024, peak[2]/1024, peak[3]/1024))
print("last  VmRSS MiB %.0f (anon %.0f file %.0f)" % (samples[-1][1]/1024, samples[-1][2]/1024, samples[-1][3]/1024))
