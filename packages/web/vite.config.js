// The web UI's build: a plain Svelte 5 SPA. `base: './'` keeps every asset URL relative, so the
// same dist/ works under kk serve's /ui/ and on any other host; hashed names under assets/.
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  base: './',
  plugins: [svelte()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsDir: 'assets',
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
});
