// Svelte compiler options for the web UI (defaults: runes, TypeScript in <script lang="ts">).
export default { compilerOptions: { runes: true } };
