"""Raw TCP bandwidth over loopback between two Python processes (400 MB, 4 MB sendall/recv_into):
the ceiling the multi-node all-reduce is compared with in docs/scaling.md.

    python3 tools/loopback_bandwidth.py
"""
import socket, os, time, sys
N=400*1024*1024; buf=b'x'*(4*1024*1024)
s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1); port=s.getsockname()[1]
if os.fork()==0:
    c=socket.create_connection(('127.0.0.1',port)); sent=0
    while sent<N: c.sendall(buf); sent+=len(buf)
    c.close(); os._exit(0)
conn,_=s.accept(); t=time.time(); got=0
b=bytearray(4*1024*1024); mv=memoryview(b)
while True:
    n=conn.recv_into(mv)
    if not n: break
    got+=n
dt=time.time()-t; print(f"{got/1e6:.0f} MB in {dt:.3f}s = {got/dt/1e9:.2f} GB/s")
