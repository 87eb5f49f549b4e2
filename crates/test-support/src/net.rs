//! Loopback ports for tests that start servers.

/// A free port whose next `n` ports are free as well (a coordinator and its nodes, which serve
/// on port + 1 + rank); checked on every interface, as the servers bind.
pub fn free_ports(n: u16) -> u16 {
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = probe.local_addr().expect("its address").port();
        drop(probe);
        if port < 60000
            && (0..=n).all(|k| std::net::TcpListener::bind(("0.0.0.0", port + k)).is_ok())
        {
            return port;
        }
    }
}

/// A unit vector of `dim` values that only `seed` gives (xorshift), for galleries in tests.
pub fn unit_vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter().map(|a| a / n).collect()
}
